#!/usr/bin/env bash
# Side-by-side figures for a change on the hot path: BASE and NEW hub binaries, interleaved
# rounds, each against a fresh hub with a fresh data directory, the same load tester for both.
# Usage: loadtest/bench/ab.sh BASE_CHORUS NEW_CHORUS LOADTEST OUT_DIR [ROUNDS [NAME=COMMAND...]]
# Each NAME=COMMAND is one more variant in every round (COMMAND: an executable taking the hub's
# flags, such as a script that runs `exec chorus "$@" --otlp-endpoint ...`).
# Prints one line per run: binary, round, CPU per delivery, delivery p99, bytes and CPU per
# connection. Traffic goes only to 127.0.0.1; every run is bounded by --duration / --sessions.
# Env: RATE, edits per second per user (default 5: 45,000 deliveries/s; 10 gives 90,000).
set -euo pipefail
BASE=$1 NEW=$2 LT=$3 OUT=$4 ROUNDS=${5:-3}
shift $(( $# < 5 ? $# : 5 ))
declare -A BIN=([base]=$BASE [new]=$NEW)
NAMES=(base new)
for extra in "$@"; do
  BIN[${extra%%=*}]=${extra#*=}
  NAMES+=("${extra%%=*}")
done
PORT=18091
mkdir -p "$OUT"
. "$(dirname "$0")/hub.sh"
URL="ws://127.0.0.1:$PORT/ws"
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round(r['metrics'].get(sys.argv[2],-1),2) if sys.argv[2]!='p99' else r['latency']['delivery']['p99_ms'])" "$@"; }
for i in $(seq 1 "$ROUNDS"); do
  for which in "${NAMES[@]}"; do
    bin=${BIN[$which]}
    start_hub "$bin" "$PORT" "$OUT/data" "$OUT/hub.log"
    "$LT" edit --url "$URL" --users 1000 --room-size 10 --rate "${RATE:-5}" --duration 10s \
      --server-pid "$HUB" --json "$OUT/edit-$which-$i.json" > /dev/null
    "$LT" connect --url "$URL" --sessions 10000 --rooms 1000 --hold 1s \
      --server-pid "$HUB" --json "$OUT/connect-$which-$i.json" > /dev/null
    stop_hub
    echo "$which round $i: $(field "$OUT/edit-$which-$i.json" server_cpu_us_per_delivery) us/delivery," \
      "p99 $(field "$OUT/edit-$which-$i.json" p99) ms," \
      "$(field "$OUT/connect-$which-$i.json" server_bytes_per_connection) B/conn," \
      "$(field "$OUT/connect-$which-$i.json" server_cpu_us_per_connection) us/set-up"
  done
done
