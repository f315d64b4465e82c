#!/bin/bash
# usage: telab.sh BIN CONFIG OUT — telemetry 19,000 devices x 9/s for 10 s against a fresh gateway
cd /tmp/prof
LG=/var/cache/portcullis-release-target/release/portcullis-loadgen
rm -f data/ports.json
$1 serve --config $2 > gw-$3.log 2>&1 &
GW=$!
for i in $(seq 100); do [ -f data/ports.json ] && break; sleep 0.1; done
$LG telemetry --tokens tokens19.txt --data-dir data --rate 9 --duration 10 --sample-every 10 --settle-ms 200 --gateway-pid $GW --out $3 > $3.out 2>&1
kill -INT $GW; wait $GW
grep -E "stored|per gateway" $3.out | head -4 | tr '\n' ' '; echo
