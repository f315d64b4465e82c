#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite: formatting, unit and property tests, and
# the end-to-end tests that start the real binaries and the real Python Blynk clients.
# The cargo target directory is kept under /var/cache so RocksDB's C++ build is done once.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --with-python-clients
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/portcullis-target}"
mkdir -p "$CARGO_TARGET_DIR"
start=$(date +%s)
cargo fmt --all -- --check
# Every cargo command selects the same packages and targets (--workspace, dev-dependencies
# included): a different selection unifies features differently, which changes the hash of
# librocksdb-sys and rebuilds RocksDB's C++ (half an hour on two cores). `cargo clippy` is such a
# different mode (check), so lints run as `./scripts/lint.sh`, not in every test run.
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
echo "test suite finished in $(( $(date +%s) - start )) s"
