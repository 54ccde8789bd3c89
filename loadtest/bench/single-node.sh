#!/usr/bin/env bash
# Single-node figures for docs/BENCHMARKS.md: 3 interleaved rounds of each scenario, each
# against a fresh hub with a fresh data directory, hub and load tester on this machine.
# Usage: loadtest/bench/single-node.sh [OUT_DIR]   (JSON reports land in OUT_DIR)
# Traffic goes only to 127.0.0.1; every run is bounded by its --duration / --sessions.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench}
mkdir -p "$OUT"
cargo build --release --bin chorus --bin chorus-loadtest
B=target/release
PORT=18081

start_hub() {
  rm -rf "$OUT/data"
  "$B/chorus" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" > "$OUT/hub.log" 2>&1 &
  HUB=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && return
    sleep 0.05
  done
  echo "hub did not start" >&2; exit 1
}
stop_hub() { kill "$HUB"; wait "$HUB" || true; }
URL="ws://127.0.0.1:$PORT/ws"

for i in 1 2 3; do
  start_hub
  "$B/chorus-loadtest" edit --url "$URL" --users 1000 --room-size 10 --rate 1 --duration 15s \
    --server-pid "$HUB" --json "$OUT/edit-1k-$i.json"
  "$B/chorus-loadtest" connect --url "$URL" --sessions 10000 --rooms 1000 --hold 1s \
    --server-pid "$HUB" --json "$OUT/connect-10k-$i.json"
  stop_hub
  start_hub
  "$B/chorus-loadtest" edit --url "$URL" --users 10000 --room-size 10 --rate 1 --duration 20s \
    --server-pid "$HUB" --json "$OUT/edit-10k-$i.json"
  stop_hub
done
echo "reports in $OUT"
