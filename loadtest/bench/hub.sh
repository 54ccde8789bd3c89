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
