# Shared by bench/run-suite and bench/run-ab (sourced, not run): the benchmark gateway's
# configuration and starting and stopping a gateway. Callers keep GW_PID set while a gateway runs
# so their exit trap can stop it.

# bench_config DATA_DIR STORE_BIN PLAIN_PORT TLS_PORT: the gateway configuration of the benchmarks.
bench_config() {
  cat <<EOC
data_dir = "$1"
[server]
bind_address = "127.0.0.1"
tls_port = $4
tls_fallback_port = $4
plain_port = $3
plain_fallback_port = $3
listen_backlog = 4096
# Every simulated device comes from loopback addresses: lift the per-source admission limits
# (internet-facing defaults) and let a storm reconnect at full speed.
[admission]
max_connections_per_ip = 1000000
accept_rate = 1000000
accept_burst = 1000000
accept_rate_per_ip = 1000000
accept_burst_per_ip = 1000000
# The benchmarks drive single connections well above the 100 msg/s per-device quota (the PING
# benchmark at 1,000 connections does ~140/s each, closed loop): turn the quota off so they
# measure the gateway, not the quota dropping frames.
[limits]
device_messages_per_sec = 0
[store]
binary = "$2"
EOC
}

# start_gateway_at BIN CONFIG DATA_DIR LOG: starts a gateway, sets GW_PID, and waits until it has
# bound its ports (its ports.json appears); exits the script if it dies or takes over 60 s.
start_gateway_at() {
  rm -f "$3/ports.json"
  "$1" serve --config "$2" >> "$4" 2>&1 &
  GW_PID=$!
  for _ in $(seq 1 600); do
    [ -f "$3/ports.json" ] && return 0
    kill -0 "$GW_PID" 2>/dev/null || { echo "gateway exited; see $4" >&2; exit 1; }
    sleep 0.1
  done
  echo "gateway did not start in 60 s" >&2; exit 1
}

# stop_gateway: SIGINT (a graceful drain) and wait for it.
stop_gateway() {
  kill -INT "$GW_PID"
  wait "$GW_PID" || true
  GW_PID=""
}
