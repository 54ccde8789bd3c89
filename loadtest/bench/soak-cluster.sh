#!/usr/bin/env bash
# The cluster soak of docs/BENCHMARKS.md ("Soak"): three chorus nodes sharing one Postgres
# database and Redis, USERS editors spread over them (the load tester gives connections to the
# URLs in turn, so most deliveries cross Redis), and `chorus-loadtest soak` sampling every
# node's memory, CPU, rooms, connections and queues every 10 s into a CSV and an SVG.
# Usage: loadtest/bench/soak-cluster.sh OUT_DIR
# Env: USERS (15000), RATE (edits per second per user, 0.1), DURATION (30m of samples after a
#      2-minute warm-up), DATABASE (the Postgres server, postgres://postgres@127.0.0.1:5432; a
#      database chorus_soak_<pid> is created on it and dropped at the end), REDIS
#      (redis://127.0.0.1:6379; a key prefix of its own).
# Traffic goes only to 127.0.0.1; the load and the sampler stop by themselves.
set -euo pipefail
cd "$(dirname "$0")/../.."
# For wait_ring.
. loadtest/bench/hub.sh
OUT=${1:?usage: soak-cluster.sh OUT_DIR}
USERS=${USERS:-15000}
RATE=${RATE:-0.1}
DURATION=${DURATION:-30m}
SERVER=${DATABASE:-postgres://postgres@127.0.0.1:5432}
REDIS=${REDIS:-redis://127.0.0.1:6379}
DB="chorus_soak_$$"
mkdir -p "$OUT"
B=target/release
[ -x "$B/chorus" ] && [ -x "$B/chorus-loadtest" ] ||
  cargo build --release --bin chorus --bin chorus-loadtest
psql "$SERVER/postgres" -qc "CREATE DATABASE $DB"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB" || true
}
trap cleanup EXIT
for port in 18101 18102 18103; do
  "$B/chorus" --listen "127.0.0.1:$port" --node-id "n$port" --allow-anonymous \
    --database-url "$SERVER/$DB" --redis-url "$REDIS" --redis-prefix "soak-$$" \
    > "$OUT/hub-$port.log" 2>&1 &
  PIDS+=($!)
  for try in $(seq 1 201); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break
    [ "$try" -le 200 ] || { echo "node $port did not start" >&2; exit 1; }
    sleep 0.05
  done
done
wait_ring 3 18101 18102 18103
secs() { python3 -c "import sys,re; m=re.fullmatch(r'(\d+)([smh])',sys.argv[1]); print(int(m[1])*{'s':1,'m':60,'h':3600}[m[2]])" "$1"; }
SAMPLE=$(( $(secs "$DURATION") + 60 ))
LOAD=$(( SAMPLE + 60 ))
"$B/chorus-loadtest" soak --duration "${SAMPLE}s" --every 10s --warmup 2m \
  --pid "${PIDS[0]}" --pid "${PIDS[1]}" --pid "${PIDS[2]}" \
  --metrics-url http://127.0.0.1:18101/metrics --metrics-url http://127.0.0.1:18102/metrics \
  --metrics-url http://127.0.0.1:18103/metrics \
  --csv "$OUT/cluster-3x.csv" --svg "$OUT/cluster-3x.svg" > "$OUT/soak.txt" 2>&1 &
SOAK=$!
"$B/chorus-loadtest" edit --users "$USERS" --room-size 10 --rate "$RATE" --duration "${LOAD}s" \
  --url ws://127.0.0.1:18101/ws,ws://127.0.0.1:18102/ws,ws://127.0.0.1:18103/ws \
  --no-progress --json "$OUT/edit.json" > "$OUT/edit.txt" 2>&1 || echo "edit run failed" >&2
wait "$SOAK" || echo "soak verdict: not flat (see $OUT/soak.txt)" >&2
cat "$OUT/soak.txt" "$OUT/edit.txt"
