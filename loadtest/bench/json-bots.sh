#!/usr/bin/env bash
# Hub CPU with no followers, one plain Yjs member per room, or one JSON-mode bot per room
# (examples/python-bot) following 10
# rooms of 10 editors at 2 edits/s each, side by side, three rounds. The hub is pinned to core 0,
# the load generator and the bots to core 1; CPU is the hub's user+system ticks (10 ms) over
# the 20 s of editing.
#   loadtest/bench/json-bots.sh [PYTHON]   (PYTHON: a python with `websockets`; BOTS=10)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release
PY=${1:-python3}
BOTS=${BOTS:-10}
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
run() {
  local with=$1
  rm -rf /tmp/jb-data; $R/chorus --listen 127.0.0.1:18300 --data-dir /tmp/jb-data > /tmp/jb-hub.log 2>&1 &
  local hub=$!; sleep 1
  taskset -p -c 0 $hub > /dev/null
  local pids=()
  if [ "$with" = yjs ]; then
    # The same number of plain Yjs members (one per room, holding still), for comparison.
    taskset -c 1 $R/chorus-loadtest connect --url ws://127.0.0.1:18300/ws --room-prefix jb- --sessions $BOTS --rooms $BOTS --hold 26s > /dev/null 2>&1 &
    pids+=($!)
    sleep 2
  fi
  if [ "$with" = json ]; then
    for i in $(seq 0 $((BOTS-1))); do
      taskset -c 1 "$PY" examples/python-bot/checklist_bot.py --hub ws://127.0.0.1:18300 --room jb-$i > /dev/null 2>&1 &
      pids+=($!)
    done
    sleep 2
  fi
  local before=$(cpu $hub)
  taskset -c 1 $R/chorus-loadtest edit --url ws://127.0.0.1:18300/ws --room-prefix jb- --users 100 --room-size 10 --rate 2 --duration 20s > /tmp/jb-lt-$with.log 2>&1
  local after=$(cpu $hub)
  for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done
  kill $hub; wait $hub 2>/dev/null || true
  echo "bots=$with hub_cpu_ticks=$((after-before)) $(grep -E 'deliver|p50|p99' /tmp/jb-lt-$with.log | head -2 | tr '\n' ' ')"
}
for round in 1 2 3; do run none; run yjs; run json; done
