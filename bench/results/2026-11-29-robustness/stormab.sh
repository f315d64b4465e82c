#!/bin/bash
# usage: stormab.sh LOADGEN TLS_PERCENT OUT — storm across a real gateway restart, 19,000 devices
cd /tmp/prof
GWB=${GWB:-/tmp/prof/gw-new}
while pgrep -f "gw-new" >/dev/null; do sleep 0.5; done
rm -f data/ports.json
$GWB serve --config gw-q0.toml > gw-$3.log 2>&1 &
GW=$!
for i in $(seq 100); do [ -f data/ports.json ] && break; sleep 0.1; done
timeout 300 $1 storm --trigger server --timeout 120 --tls-percent $2 --login-rate 2000 \
  --tokens tokens19.txt --data-dir data --settle-ms 0 --out $3 > $3.out 2> $3.err &
LG=$!
for i in $(seq 1200); do grep -q "measure" $3.err && break; sleep 0.1; done
kill -INT $GW; wait $GW
rm -f data/ports.json
$GWB serve --config gw-q0.toml >> gw-$3.log 2>&1 &
GW=$!
wait $LG
echo "$3 $(grep -E "back after the return" $3.out | head -1)"
kill -INT $GW; wait $GW
