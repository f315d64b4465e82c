#!/bin/bash
# usage: pingab.sh BIN CONFIG OUT CONNS — one PING run against a fresh gateway
cd /tmp/prof
LG=/var/cache/portcullis-release-target/release/portcullis-loadgen
rm -f data/ports.json
$1 serve --config $2 > gw-$3.log 2>&1 &
GW=$!
for i in $(seq 100); do [ -f data/ports.json ] && break; sleep 0.1; done
$LG ping --tokens tokens19.txt --devices $4 --data-dir data --duration 8 --gateway-pid $GW --settle-ms 500 --out $3 > $3.out 2>&1
kill -INT $GW; wait $GW
python3 - $3 <<'PY'
import json,sys
d=json.load(open(sys.argv[1]+'.json')); r=d['result']
print(sys.argv[1], round(r["counts"]["pings_ok"]/r["measure_s"]))
PY
