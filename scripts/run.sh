#!/usr/bin/env bash
# Sets up a fresh machine, builds Portcullis in release mode and runs the gateway with its
# embedded defaults: data in ./data, a generated certificate (clients trust ./data/tls/ca.pem),
# the store as a child process, TLS on 443 (else 9443) and plain TCP on 80 (else 8080).
# Extra arguments go to `portcullis serve` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/portcullis-target}"
cargo build --release --bins
exec "$CARGO_TARGET_DIR/release/portcullis" serve "$@"
