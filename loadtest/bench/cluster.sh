#!/usr/bin/env bash
# Cluster figures for docs/BENCHMARKS.md: the same edit load against one hub alone and against
# three hubs sharing Redis, with every room's members spread over the three (the load tester
# gives connections to the URLs in turn, so most deliveries cross Redis). ROUNDS interleaved
# rounds (default 3), each against fresh hubs with fresh data directories.
# Usage: loadtest/bench/cluster.sh [OUT_DIR]   (JSON reports land in OUT_DIR)
# Env: USERS (3000), RATE (1 edit/s per user), DURATION (15s), ROUNDS (3),
#      REDIS (redis://127.0.0.1:6379; each run uses its own key prefix),
#      MODES ("single three"), CHORUS (the hub binary; default the release build, e.g. an
#      older build to compare against: reports are named <mode>-<TAG>-<round>, TAG default hub),
#      SINGLE_FLAGS / THREE_FLAGS (extra hub flags for each mode, e.g. "--worker-threads 1").
# Traffic goes only to 127.0.0.1; every run is bounded by its --duration.
set -euo pipefail
cd "$(dirname "$0")/../.."
# For wait_ring (this script starts its hubs with its own start_hub, defined below).
. loadtest/bench/hub.sh
OUT=${1:-target/bench-cluster}
USERS=${USERS:-3000}
RATE=${RATE:-1}
DURATION=${DURATION:-15s}
ROUNDS=${ROUNDS:-3}
REDIS=${REDIS:-redis://127.0.0.1:6379}
MODES=${MODES:-single three}
TAG=${TAG:-hub}
mkdir -p "$OUT"
cargo build --release --bin chorus --bin chorus-loadtest
B=target/release
HUB=${CHORUS:-$B/chorus}
PIDS=()

start_hub() { # port [cluster flags...]
  local port=$1; shift
  rm -rf "$OUT/data-$port"
  "$HUB" --listen "127.0.0.1:$port" --data-dir "$OUT/data-$port" "$@" \
    > "$OUT/hub-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && return
    sleep 0.05
  done
  echo "hub on $port did not start" >&2; exit 1
}
stop_hubs() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_hubs EXIT
cpu_of() { # total CPU seconds (user+system) of the running hubs
  local ticks=0
  for p in "${PIDS[@]}"; do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc
}
edit() { # name url
  local before after
  before=$(cpu_of)
  "$B/chorus-loadtest" edit --url "$2" --users "$USERS" --room-size 10 --rate "$RATE" \
    --duration "$DURATION" --json "$OUT/$1.json"
  after=$(cpu_of)
  echo "$1: hub CPU $(echo "$after - $before" | bc) s" | tee -a "$OUT/cpu.txt"
}

for i in $(seq 1 "$ROUNDS"); do
  if [[ " $MODES " == *" single "* ]]; then
    # shellcheck disable=SC2086 # flags are words
    start_hub 18101 ${SINGLE_FLAGS:-}
    edit "single-$TAG-$i" ws://127.0.0.1:18101/ws
    stop_hubs
  fi
  [[ " $MODES " == *" three "* ]] || continue
  prefix="bench-$$-$i"
  for port in 18101 18102 18103; do
    # shellcheck disable=SC2086
    start_hub "$port" --redis-url "$REDIS" --redis-prefix "$prefix" --node-id "n$port" \
      ${THREE_FLAGS:-}
  done
  # Every node must see the other two before the load starts.
  wait_ring 3 18101 18102 18103
  edit "three-$TAG-$i" ws://127.0.0.1:18101/ws,ws://127.0.0.1:18102/ws,ws://127.0.0.1:18103/ws
  stop_hubs
done
echo "reports in $OUT"
