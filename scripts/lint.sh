#!/usr/bin/env bash
# Formatting and lints for the whole workspace, in a target dir of their own so a lint run never
# holds the test build's lock. Its first run builds RocksDB's C++ once more in
# cargo's check mode (about half an hour on two cores); later runs are quick.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/portcullis-lint-target}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
