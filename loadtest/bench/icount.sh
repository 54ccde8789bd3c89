#!/usr/bin/env bash
# Instructions per delivery and per connection set-up, counted by callgrind: repeatable on this
# noisy machine, where CPU seconds move by 10 % between runs (issue 20: compare by instruction
# counts, report CPU time beside them).
#
# Usage: loadtest/bench/icount.sh LOADTEST OUT_DIR NAME=SERVER...
#   SERVER is `chorus:BINARY` (a hub, fresh data directory, embedded SQLite) or
#   `relay:BINARY` (chorus-bare-relay). Example:
#     loadtest/bench/icount.sh target/release/chorus-loadtest /tmp/ic \
#       relay=relay:target/release/chorus-bare-relay new=chorus:target/release/chorus
#
# Each server runs under `valgrind --tool=callgrind` twice per measure, with a short and a
# long load, counted from the moment it serves; the difference between the two runs' totals,
# divided by the difference in deliveries (or sessions), is what one more delivery (or set-up)
# costs, with the clients' connections and shutdown cancelled out. The load is light (50 users in rooms of 10,
# 1 edit/s each: 450 deliveries/s; 200 and 400 sessions) so that the slowed server keeps up and
# writes as it would at full speed.
# Env: USERS (default 50), SHORT and LONG (edit seconds, default 10 and 20), SESSIONS (default
# 200; the long run has twice as many).
# Traffic goes only to 127.0.0.1; every run is bounded by --duration / --sessions.
set -euo pipefail
LT=$1 OUT=$2
shift 2
USERS=${USERS:-50} SHORT=${SHORT:-10} LONG=${LONG:-20} SESSIONS=${SESSIONS:-200}
PORT=18093
mkdir -p "$OUT"

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics'][sys.argv[2]])" "$@"; }
# The total the callgrind output file reports (`totals:` or `summary:` line).
total() { awk '/^(totals|summary):/ { print $2; exit }' "$1"; }

# start KIND BINARY OUTFILE: the server under callgrind on $PORT, once it accepts connections.
start() {
  local kind=$1 bin=$2 out=$3
  rm -rf "$OUT/data"
  case $kind in
    chorus) valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
              "$bin" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" > "$OUT/server.log" 2>&1 & ;;
    relay)  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
              "$bin" "127.0.0.1:$PORT" > "$OUT/server.log" 2>&1 & ;;
    *) echo "unknown server kind $kind" >&2; exit 2 ;;
  esac
  SERVER=$!
  for _ in $(seq 1 600); do
    if (exec 3<> "/dev/tcp/127.0.0.1/$PORT") 2> /dev/null; then
      # Counting starts once the server serves: its start-up is left out (quanta's clock
      # calibration alone varies by millions of instructions from one start to the next).
      sleep 0.5
      callgrind_control -i on "$SERVER" > /dev/null 2>&1
      return
    fi
    sleep 0.1
  done
  echo "server did not start (see $OUT/server.log)" >&2
  exit 1
}
stop() {
  kill -TERM "$SERVER"
  wait "$SERVER" || true
}

# measure NAME KIND BINARY: prints instructions per delivery and per set-up.
measure() {
  local name=$1 kind=$2 bin=$3
  declare -A ins=() n=()
  for run in short long; do
    local secs=$SHORT sessions=$SESSIONS
    if [ "$run" = long ]; then secs=$LONG; sessions=$((SESSIONS * 2)); fi
    start "$kind" "$bin" "$OUT/$name-edit-$run.cg"
    "$LT" edit --url "ws://127.0.0.1:$PORT/ws" --users "$USERS" --room-size 10 --rate 1 \
      --duration "${secs}s" --server-pid "$SERVER" --json "$OUT/$name-edit-$run.json" > /dev/null
    stop
    ins[edit-$run]=$(total "$OUT/$name-edit-$run.cg")
    n[edit-$run]=$(field "$OUT/$name-edit-$run.json" deliveries_received)
    start "$kind" "$bin" "$OUT/$name-connect-$run.cg"
    "$LT" connect --url "ws://127.0.0.1:$PORT/ws" --sessions "$sessions" --rooms 100 \
      --hold 1s --server-pid "$SERVER" --json "$OUT/$name-connect-$run.json" > /dev/null
    stop
    ins[connect-$run]=$(total "$OUT/$name-connect-$run.cg")
    n[connect-$run]=$(field "$OUT/$name-connect-$run.json" sessions_ok)
  done
  python3 - "$name" "${ins[edit-short]}" "${ins[edit-long]}" "${n[edit-short]}" "${n[edit-long]}" \
    "${ins[connect-short]}" "${ins[connect-long]}" "${n[connect-short]}" "${n[connect-long]}" <<'PY'
import sys
name = sys.argv[1]
e0, e1, d0, d1, c0, c1, s0, s1 = map(float, sys.argv[2:])
print(f"{name}: {(e1 - e0) / (d1 - d0):,.0f} instructions per delivery "
      f"({d1 - d0:,.0f} more deliveries), "
      f"{(c1 - c0) / (s1 - s0):,.0f} per connection set-up ({s1 - s0:,.0f} more sessions)")
PY
}

for spec in "$@"; do
  name=${spec%%=*} rest=${spec#*=}
  measure "$name" "${rest%%:*}" "${rest#*:}"
done
