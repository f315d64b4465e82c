#!/bin/bash
# usage: ping-vs-redis.sh CONNS RUN — one PING run of the gateway and one of redis-server at the same concurrency
cd /tmp/prof
R=/var/cache/portcullis-release-target/release
while pgrep -f "release/portcullis serve" >/dev/null; do sleep 0.5; done
rm -f data/ports.json
$R/portcullis serve --config gw-q0.toml > gw-ping.log 2>&1 &
GW=$!
for i in $(seq 100); do [ -f data/ports.json ] && break; sleep 0.1; done
$R/portcullis-loadgen ping --tokens tokens19.txt --devices $1 --data-dir data --duration 10 --gateway-pid $GW --settle-ms 500 --out ping-$1-$2 > /dev/null 2>&1
kill -INT $GW; wait $GW
python3 -c "import json;d=json.load(open('ping-$1-$2.json'));r=d['result'];print('portcullis', round(r['counts']['pings_ok']/r['measure_s']))"
redis-server --port 26379 --bind 127.0.0.1 --save '' --appendonly no --maxclients 10100 --daemonize no > /dev/null 2>&1 &
RP=$!
sleep 1
n=$(( $1 * 20 > 200000 ? $1 * 20 : 200000 ))
redis-benchmark -p 26379 -t ping -c $1 -n $n --csv 2>/dev/null | grep PING | tee redis-$1-$2.csv
kill $RP; wait $RP 2>/dev/null
