#!/bin/bash
# usage: tls.sh GW_BIN OUT [DEVICES] [PERF] — one 100% TLS connect ramp against a fresh gateway
cd /tmp/prof
LG=${LG:-/var/cache/portcullis-release-target/release/portcullis-loadgen}
rm -f data/ports.json
$1 serve --config ${CONFIG:-gw-q0.toml} > gw-$2.log 2>&1 &
GW=$!
for i in $(seq 100); do [ -f data/ports.json ] && break; sleep 0.1; done
sleep 0.5
if [ -n "$4" ]; then perf record -F 999 -g -p $GW -o perf-$2.data 2>/dev/null & PP=$!; fi
$LG connect --tokens tokens19.txt --devices ${3:-8000} --data-dir data --tls-percent 100 --hold 1 --login-rate 4000 --settle-ms 300 --gateway-pid $GW --out $2 2>&1 | grep -E "logins per gateway|failed"
[ -n "$4" ] && kill -INT $PP && wait $PP
kill -INT $GW; wait $GW
