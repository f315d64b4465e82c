#!/usr/bin/env bash
# perfping.sh BIN_DIR NAME: perf profile of the gateway under loadgen ping at 1000 connections.
set -euo pipefail
cd /work/main; . bench/lib.sh
BIN=$1; NAME=$2; W=/tmp/perf-$NAME; rm -rf $W; mkdir -p $W/data
bench_config $W/data $BIN/portcullis-store 27080 27443 > $W/c.toml
start_gateway_at $BIN/portcullis $W/c.toml $W/data $W/gw.log
$BIN/portcullis-loadgen provision --data-dir $W/data --count 1000 --tokens $W/tokens.txt > /dev/null
( $BIN/portcullis-loadgen ping --tokens $W/tokens.txt --devices 1000 --data-dir $W/data --duration 12 --out $W/ping > $W/lg.log 2>&1 ) &
LG=$!
sleep 5
perf record -F 999 -g -p $GW_PID -o $W/perf.data -- sleep 6 > /dev/null 2>&1
wait $LG
grep -o '"pings":[0-9.]*' $W/ping.json | head -1 || true
stop_gateway
perf report -i $W/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25 > $W/top.txt
