# Sourced by the bench scripts: start_hub BINARY PORT DATA_DIR LOG starts a hub with a fresh
# data directory and waits for /healthz (sets HUB to its pid); stop_hub stops it.
start_hub() {
  rm -rf "$3"
  "$1" --listen "127.0.0.1:$2" --data-dir "$3" > "$4" 2>&1 &
  HUB=$!
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$2/healthz" > /dev/null 2>&1 && return
    sleep 0.05
  done
  echo "hub did not start" >&2; exit 1
}
stop_hub() { kill "$HUB"; wait "$HUB" || true; }
# wait_ring N PORT...: waits until the hub on each PORT sees a ring of N nodes (10 s at most).
wait_ring() {
  local n=$1 port try
  shift
  for port in "$@"; do
    for try in $(seq 1 201); do
      curl -sf "http://127.0.0.1:$port/v1/route?room=x" | grep -q "\"nodes\":$n" && break
      [ "$try" -le 200 ] || { echo "node $port never saw $n nodes" >&2; exit 1; }
      sleep 0.05
    done
  done
}
