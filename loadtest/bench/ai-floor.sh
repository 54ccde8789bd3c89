#!/usr/bin/env bash
# The `ai` scenario against its floor, side by side in each round:
#   chorus/hub      the hub's assistant writes the answers (the real thing);
#   chorus/clients  one client per room writes the same stamped tokens, commits and cursor
#                   moves (`--writer clients`): the same traffic through Chorus without the
#                   AI bridge;
#   relay/clients   the same through `chorus-bare-relay` (no CRDT, no store): what this
#                   machine's kernel, tokio and tungstenite cost for the traffic, with the load
#                   tester on the other core.
# The server is pinned to core 0, the load tester to core 1; a fresh server per run.
# Usage: loadtest/bench/ai-floor.sh CHORUS RELAY LOADTEST OUT_DIR [ROUNDS]
# Env as ai.sh: RUNS (100), MEMBERS (10), TPS (50), TOKENS (250), EDIT_RATE (1), PHASE (8s).
# Traffic goes only to 127.0.0.1; every run is bounded.
set -euo pipefail
CHORUS=$1 RELAY=$2 LT=$3 OUT=$4 ROUNDS=${5:-3}
PORT=18093 STANDIN=127.0.0.1:18094
mkdir -p "$OUT"

wait_up() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2> /dev/null && return 0
    sleep 0.05
  done
  echo "server did not start" >&2
  return 1
}

one() { # NAME WRITER SERVER-COMMAND...
  local name=$1 writer=$2
  shift 2
  rm -rf "$OUT/data"
  taskset -c 0 "$@" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  wait_up
  taskset -c 1 "$LT" ai --url "ws://127.0.0.1:$PORT/ws" --runs "${RUNS:-100}" \
    --members "${MEMBERS:-10}" --tokens-per-second "${TPS:-50}" --tokens "${TOKENS:-250}" \
    --edit-rate "${EDIT_RATE:-1}" --phase "${PHASE:-8s}" --standin-listen "$STANDIN" \
    --writer "$writer" --server-pid "$pid" --no-progress --json "$OUT/$name-$i.json" \
    > /dev/null || true
  kill "$pid"
  wait "$pid" || true
  python3 - "$OUT/$name-$i.json" "$name" "$i" << 'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency"]; m = r["metrics"]
t, a, b = l.get("token_to_member", {}), l.get("edit_without_ai", {}), l.get("edit_with_ai", {})
def share(k): return f"{m.get(k, 0):.2f}"
print(f"round {sys.argv[3]} {sys.argv[2]:>15}: token p99 {t.get('p99_ms')} ms;"
      f" edit p50 {a.get('p50_ms')} -> {b.get('p50_ms')} ms, p99 {a.get('p99_ms')} -> {b.get('p99_ms')} ms;"
      f" server/generator core share with answers {share('server_cpu_share_edit_with_ai')}/{share('generator_cpu_share_edit_with_ai')};"
      f" tokens {int(m.get('token_deliveries', 0))}/{int(m.get('token_deliveries_expected', 0))};"
      f" problems {r['problems']}")
PY
}

for i in $(seq 1 "$ROUNDS"); do
  one chorus-hub hub "$CHORUS" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" \
    --ai-base-url "http://$STANDIN/v1" --ai-model standin \
    --ai-max-runs 1000 --ai-max-tenant-runs 1000 --ai-runs-per-minute 1000
  one chorus-clients clients "$CHORUS" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data"
  one relay-clients clients "$RELAY" "127.0.0.1:$PORT"
done
