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

. loadtest/bench/hub.sh
start() { start_hub "$B/chorus" "$PORT" "$OUT/data" "$OUT/hub.log"; }
URL="ws://127.0.0.1:$PORT/ws"

for i in 1 2 3; do
  start
  "$B/chorus-loadtest" edit --url "$URL" --users 1000 --room-size 10 --rate 1 --duration 15s \
    --server-pid "$HUB" --json "$OUT/edit-1k-$i.json"
  "$B/chorus-loadtest" connect --url "$URL" --sessions 10000 --rooms 1000 --hold 1s \
    --server-pid "$HUB" --json "$OUT/connect-10k-$i.json"
  stop_hub
  start
  "$B/chorus-loadtest" edit --url "$URL" --users 10000 --room-size 10 --rate 1 --duration 20s \
    --server-pid "$HUB" --json "$OUT/edit-10k-$i.json"
  stop_hub
done
echo "reports in $OUT"
