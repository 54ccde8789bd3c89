#!/usr/bin/env bash
# The measurements behind docs/SCALING.md: per-unit costs on one node of a cluster, then the
# documents-heavy workload on three nodes at two loads, to check the capacity model against.
# Usage: loadtest/bench/scaling.sh OUT_DIR
# Env: ROUNDS (3), CHORUS / LOADTEST (binaries; default the release builds),
#      PG (postgres://postgres@127.0.0.1:5432; each round creates and drops its own database),
#      REDIS (redis://127.0.0.1:6379; each run uses its own key prefix),
#      LOADS ("1000 2000": users of the two three-node runs), SHORT and LONG (10 and 30:
#      seconds of load of the two runs whose difference is measured).
# Every hub runs as a cluster node (Postgres and Redis), as the plan's nodes do. CPU is read
# from /proc (user + system) for the hubs, every postgres process and redis-server. Traffic goes only to 127.0.0.1; every run is bounded by --duration.
set -euo pipefail
cd "$(dirname "$0")/../.."
# For wait_ring (this script starts its hubs with its own start_hub, defined below).
. loadtest/bench/hub.sh
OUT=${1:?usage: scaling.sh OUT_DIR}
ROUNDS=${ROUNDS:-3}
HUB=${CHORUS:-target/release/chorus}
LT=${LOADTEST:-target/release/chorus-loadtest}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${REDIS:-redis://127.0.0.1:6379}
LOADS=${LOADS:-1000 2000}
SHORT=${SHORT:-10}
LONG=${LONG:-30}
mkdir -p "$OUT"
# A node on a shared database serves tenants: clients bring a token, as in production.
SECRET="scaling-bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d " \n")"
export CHORUS_LOADTEST_TOKEN
CHORUS_LOADTEST_TOKEN=$("$HUB" token --room '*' --jwt-secret "$SECRET" --ttl 2h)
PIDS=()
DB=""

ticks() { # CPU ticks (user + system) of the given pids
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
pg_pids() { pgrep -x postgres || true; }
redis_pids() { pgrep -x redis-server || true; }
secs() { python3 -c "import sys; print(round(int(sys.argv[1]) / $(getconf CLK_TCK), 3))" "$1"; }

start_hub() { # port prefix
  local port=$1 prefix=$2
  rm -rf "$OUT/data-$port"
  "$HUB" --listen "127.0.0.1:$port" --data-dir "$OUT/data-$port" \
    --database-url "$PG/$DB" --redis-url "$REDIS" --redis-prefix "$prefix" \
    --node-id "n$port" --jwt-secret "$SECRET" > "$OUT/hub-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && return
    sleep 0.05
  done
  echo "hub on $port did not start (see $OUT/hub-$port.log)" >&2
  exit 1
}
stop_hubs() {
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_hubs
  [ -z "$DB" ] || psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB" > /dev/null 2>&1 || true
}
trap cleanup EXIT
fresh_db() {
  [ -z "$DB" ] || psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB" > /dev/null
  DB="chorus_scaling_$$_$1"
  psql "$PG/postgres" -qc "CREATE DATABASE $DB" > /dev/null
}
cluster() { # nodes prefix: starts them and waits until each sees them all
  local n=$1 prefix=$2 port
  for port in $(seq 18111 $((18110 + n))); do start_hub "$port" "$prefix"; done
  wait_ring "$n" $(seq 18111 $((18110 + n)))
}
urls() { # nodes
  seq 18111 $((18110 + $1)) | sed 's|.*|ws://127.0.0.1:&/ws|' | paste -sd, -
}
published() { # total Redis publishes of the running hubs
  python3 - $(seq 18111 $((18110 + ${#PIDS[@]}))) << 'PY'
import re, sys, urllib.request
total = 0
for port in sys.argv[1:]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    total += sum(float(m.group(1)) for m in
                 re.finditer(r"^chorus_redis_published_total(?:\{[^}]*\})? (\S+)$", text, re.M))
print(int(total))
PY
}
# run NAME NODES PREFIX DURATION SCENARIO ARGS...: fresh nodes, one load run; prints
# "hub_ticks pg_ticks redis_ticks published" for the run (set-up and drain included).
run() {
  local name=$1 nodes=$2 prefix=$3 duration=$4 h0 p0 r0 pub0 h1 p1 r1 pub1
  shift 4
  cluster "$nodes" "$prefix"
  # The quiet before: the nodes' start-up settled.
  sleep 2
  h0=$(ticks "${PIDS[@]}") p0=$(ticks $(pg_pids)) r0=$(ticks $(redis_pids)) pub0=$(published)
  "$LT" "$1" --url "$(urls "$nodes")" --duration "$duration" --json "$OUT/$name.json" "${@:2}" \
    > /dev/null
  h1=$(ticks "${PIDS[@]}") p1=$(ticks $(pg_pids)) r1=$(ticks $(redis_pids)) pub1=$(published)
  stop_hubs
  echo "$((h1 - h0)) $((p1 - p0)) $((r1 - r0)) $((pub1 - pub0))"
}
# measure NAME NODES SCENARIO ARGS...: the load for SHORT and for LONG seconds, each on fresh
# nodes; what the longer run cost more (its connections, room loads and drain cancel out) is
# the steady state of LONG - SHORT seconds. Appends a JSON line to $OUT/runs.jsonl.
measure() {
  local name=$1 nodes=$2 a b
  shift 2
  a=$(run "$name-short" "$nodes" "sc-$$-$name-s" "${SHORT}s" "$@")
  b=$(run "$name-long" "$nodes" "sc-$$-$name-l" "${LONG}s" "$@")
  python3 - "$OUT" "$name" "$nodes" "$((LONG - SHORT))" "$(getconf CLK_TCK)" $a $b \
    >> "$OUT/runs.jsonl" << 'PY'
import json, sys
out, name, nodes, secs, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
a = list(map(int, sys.argv[6:10]))
b = list(map(int, sys.argv[10:14]))
rs = json.load(open(f"{out}/{name}-short.json"))
rl = json.load(open(f"{out}/{name}-long.json"))
def m(r, *keys):
    for k in keys:
        if k in r["metrics"]:
            return r["metrics"][k]
    return 0
print(json.dumps({
    "name": name, "nodes": nodes, "seconds": secs,
    "hub_cpu_s": (b[0] - a[0]) / hz, "pg_cpu_s": (b[1] - a[1]) / hz,
    "redis_cpu_s": (b[2] - a[2]) / hz, "published": b[3] - a[3],
    "updates": m(rl, "edits_sent", "updates_sent") - m(rs, "edits_sent", "updates_sent"),
    "deliveries": m(rl, "deliveries_received") - m(rs, "deliveries_received"),
    "lost": sum(m(r, "deliveries_expected") - m(r, "deliveries_received") for r in (rs, rl)),
    "problems": rs.get("problems", []) + rl.get("problems", []),
    "p99_ms": max(next(iter(r["latency"].values()))["p99_ms"] for r in (rs, rl)),
}))
PY
  tail -1 "$OUT/runs.jsonl"
}
# idle NAME NODES: CPU of idle nodes over 20 s (their background loops).
idle() {
  local h0 h1
  h0=$(ticks "${PIDS[@]}")
  sleep 20
  h1=$(ticks "${PIDS[@]}")
  echo "{\"name\": \"$1\", \"nodes\": $2, \"idle_cpu_s\": $(secs $((h1 - h0))), \"wall_s\": 20}" \
    | tee -a "$OUT/runs.jsonl"
}
# memory NAME SESSIONS ROOMS: bytes per connection with that many rooms (one node).
memory() {
  "$LT" connect --url "$(urls 1)" --sessions "$2" --rooms "$3" --hold 1s \
    --server-pid "${PIDS[0]}" --json "$OUT/$1.json" > /dev/null
  python3 - "$OUT/$1.json" "$1" "$2" "$3" >> "$OUT/runs.jsonl" << 'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print(json.dumps({"name": sys.argv[2], "sessions": int(sys.argv[3]), "rooms": int(sys.argv[4]),
                  "bytes_per_connection": m.get("server_bytes_per_connection")}))
PY
  tail -1 "$OUT/runs.jsonl"
}

: > "$OUT/runs.jsonl"
for i in $(seq 1 "$ROUNDS"); do
  fresh_db "$i"
  # One node: its idle cost; updates, deliveries and active rooms in four proportions (the
  # model's three unknowns, by least squares); presence in one room of 200 viewers moving their cursor at 1 Hz.
  cluster 1 "sc-$$-$i-idle1"
  idle "idle-1-$i" 1
  stop_hubs
  measure "unit-r2-$i" 1 edit --users 1000 --room-size 2 --rate 1
  measure "unit-r10-$i" 1 edit --users 1000 --room-size 10 --rate 1
  measure "unit-r2slow-$i" 1 edit --users 1000 --room-size 2 --rate 0.25
  measure "unit-r10slow-$i" 1 edit --users 1000 --room-size 10 --rate 0.25
  measure "presence-200-$i" 1 presence --viewers 200 --rate 1
  # Memory per connection, and per open room (the same sessions over ten times the rooms).
  cluster 1 "sc-$$-$i-mem"
  memory "mem-rooms200-$i" 2000 200
  stop_hubs
  cluster 1 "sc-$$-$i-mem2"
  memory "mem-rooms2000-$i" 2000 2000
  stop_hubs
  # Redis: rooms of 10 spread over three nodes (most deliveries cross Redis).
  measure "spread-r10-$i" 3 edit --users 1000 --room-size 10 --rate 1 --placement spread
  # The check: three nodes, rooms placed by name, the documents-heavy workload (rooms of 5,
  # one edit per 2 s each) at two loads.
  cluster 3 "sc-$$-$i-idle3"
  idle "idle-3-$i" 3
  stop_hubs
  for users in $LOADS; do
    measure "docs-$users-$i" 3 edit --users "$users" --room-size 5 --rate 0.5 --placement room
  done
done
echo "runs in $OUT/runs.jsonl"
