#!/bin/bash
# Fanout measurements against a release gateway: one gateway, devices provisioned once, then
# several fanout runs.  usage: fanout.sh RESULTS_DIR DEVICES
set -euo pipefail
OUT="$1"; N="$2"
REL=/var/cache/portcullis-release-target/release
W=/tmp/fan/work; rm -rf "$W"; mkdir -p "$W" "$OUT"
cat > "$W/gw.toml" <<EOT
data_dir = "$W/data"
[server]
bind_address = "127.0.0.1"
tls_port = 28443
tls_fallback_port = 28443
plain_port = 28080
plain_fallback_port = 28080
listen_backlog = 4096
[admission]
max_connections_per_ip = 1000000
accept_rate = 1000000
accept_burst = 1000000
accept_rate_per_ip = 1000000
accept_burst_per_ip = 1000000
[limits]
device_messages_per_sec = 0
[metrics]
port = 0
[store]
binary = "$REL/portcullis-store"
EOT
"$REL/portcullis" serve --config "$W/gw.toml" > "$OUT/gateway.log" 2>&1 &
GW=$!
trap 'kill -INT $GW 2>/dev/null; wait $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$W/data/ports.json" ] && break; sleep 0.1; done
"$REL/portcullis-loadgen" provision --data-dir "$W/data" --count "$N" --tokens "$W/tokens.txt" | tail -1
"$REL/portcullis" admin --data-dir "$W/data" user create --email bench@portcullis.invalid --org default --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' > "$W/pw"
run() { # name devices rate apps per-app [extra...]
  local name=$1 devices=$2 rate=$3 apps=$4 per=$5; shift 5
  local perarg=(); [ "$per" != "-" ] && perarg=(--subscriptions-per-app "$per")
  echo "== $name: $devices devices x $rate/s, $apps apps, per-app $per $*"
  timeout 300 "$REL/portcullis-loadgen" fanout --tokens "$W/tokens.txt" --devices "$devices" \
    --data-dir "$W/data" --apps "$apps" "${perarg[@]}" --email bench@portcullis.invalid \
    --password-file "$W/pw" --rate "$rate" --duration 10 --gateway-pid "$GW" \
    --out "$OUT/$name" "$@" 2>&1 | tail -4
}
ROUNDS="${ROUNDS:-1}"
if [ -n "${HEAVY:-}" ]; then
  for r in 1 2 3; do
    run "h3-10k-5hz-r$r" 10000 5 10 3000
    run "h1-10k-10hz-r$r" 10000 10 10 -
  done
  exit 0
fi
for r in $(seq 2 "$ROUNDS"); do
  run "f1-10k-r$r" 10000 1 10 -
  run "f3-10k-r$r" 10000 1 10 3000
  run "f1-1k-10hz-r$r" 1000 10 10 -
  run "f1-10k-tls-r$r" 10000 1 10 - --app-tls
done
