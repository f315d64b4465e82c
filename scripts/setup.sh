#!/usr/bin/env bash
# Installs what building and testing Portcullis needs on a fresh Debian 12 machine: the C/C++
# toolchain and libclang for the bundled RocksDB, curl for the REST end-to-end tests, and the real
# Blynk Python clients used by the compatibility tests. Safe to run again: it only installs what
# is missing.
set -euo pipefail

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# The accounts end-to-end tests drive the REST API with the real curl binary.
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${1:-}" = "--with-python-clients" ]; then
    if ! python3 -c 'import blynklib, BlynkLib' >/dev/null 2>&1; then
        echo "setup: installing the Blynk Python clients (blynklib 0.2.6, blynk-library-python 0.2.0)" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            blynklib==0.2.6 blynk-library-python==0.2.0 2>/dev/null \
          || python3 -m pip install --quiet --break-system-packages blynklib==0.2.6 blynk-library-python==0.2.0
    fi
fi
