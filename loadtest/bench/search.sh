#!/usr/bin/env bash
# Search figures (docs/BENCHMARKS.md, "Search"), on release binaries, loopback only, bounded:
#   1. the edit path with search off, queued and on, side by side: CPU per delivery (1,000
#      users in rooms of 10 at 5 edits/s for 10 s; the hub pinned to core 0, the load tester
#      to core 1), ROUNDS interleaved rounds, each on a fresh hub and data directory. Queued:
#      every flush queues its room, indexing waits 60 s (the edit path's own cost). On: each
#      room is also indexed (and embedded through the stand-in model server) while edited;
#   2. the corpus: ROOMS rooms of generated text written by members, the time until all are
#      indexed, queries of each mode at RATE/s, the vector index's size
#      (chorus-search-bench).
# Usage: loadtest/bench/search.sh [OUT_DIR]   Env: ROUNDS (3), ROOMS (10000), RATE (100).
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release
OUT=${1:-/tmp/search-bench}
mkdir -p "$OUT"
PORT=18400
STANDIN=18410
. loadtest/bench/hub.sh
$R/chorus-standin-llm --listen 127.0.0.1:$STANDIN > "$OUT/standin.log" 2>&1 &
SI=$!
trap 'kill $SI 2>/dev/null || true' EXIT
sleep 0.5
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round(r['metrics'].get(sys.argv[2],-1),2))" "$@"; }
hub_with() {
  # start_hub with the search flags: $1 = off (no search), queued (every flush queues its
  # room, but no indexing runs within the 10 s: the edit path alone), on (indexing too).
  local flags=(--search "$([ "$1" = off ] && echo false || echo true)"
    --ai-base-url "http://127.0.0.1:$STANDIN/v1" --ai-model standin
    --search-embedding-model standin-embed)
  [ "$1" = queued ] && flags+=(--search-debounce 60s)
  rm -rf "$OUT/data"
  $R/chorus --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" "${flags[@]}" > "$OUT/hub-$1.log" 2>&1 &
  HUB=$!
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
    sleep 0.05
  done
  taskset -p -c 0 "$HUB" > /dev/null
}
for i in $(seq 1 "${ROUNDS:-3}"); do
  for which in off queued on; do
    hub_with "$which"
    taskset -c 1 $R/chorus-loadtest edit --url "ws://127.0.0.1:$PORT/ws" --users 1000 --room-size 10 \
      --rate 5 --duration 10s --server-pid "$HUB" --json "$OUT/edit-$which-$i.json" > /dev/null
    indexed=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^chorus_search_indexed_total/ {print $2}')
    stop_hub
    echo "search $which round $i: $(field "$OUT/edit-$which-$i.json" server_cpu_us_per_delivery) us/delivery, rooms indexed: ${indexed:-0}"
  done
done
hub_with on
taskset -c 1 $R/chorus-search-bench --hub "http://127.0.0.1:$PORT" --rooms "${ROOMS:-10000}" \
  --rate "${RATE:-100}" --server-pid "$HUB" | tee "$OUT/corpus.txt"
stop_hub
