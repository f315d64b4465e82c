#!/bin/bash
# usage: restart-storm.sh TLS_PERCENT OUT — storm across a real gateway restart, 19,000 devices
cd /tmp/prof
R=/var/cache/portcullis-release-target/release
while pgrep -f "release/portcullis serve" >/dev/null; do sleep 0.5; done
rm -f data/ports.json
$R/portcullis serve --config gw.toml > gw-$2.log 2>&1 &
GW=$!
for i in $(seq 100); do [ -f data/ports.json ] && break; sleep 0.1; done
timeout 300 $R/portcullis-loadgen storm --trigger server --timeout 120 --tls-percent $1 --login-rate ${3:-5000} \
  --tokens tokens19.txt --data-dir data --settle-ms 0 --out $2 > $2.out 2> $2.err &
LG=$!
for i in $(seq 1200); do grep -q "measure" $2.err && break; sleep 0.1; done
kill -INT $GW; wait $GW
rm -f data/ports.json
$R/portcullis serve --config gw.toml >> gw-$2.log 2>&1 &
GW=$!
wait $LG
grep -E "all back|back after the return|reconnect" $2.out
kill -INT $GW; wait $GW
