#!/usr/bin/env bash
# The `ai` scenario's figures: RUNS assistant runs into RUNS rooms of MEMBERS members, while the
# members edit; each round against a fresh hub (pinned to core 0) with a fresh data directory,
# the load tester (and its in-process stand-in model server) on core 1.
# Usage: loadtest/bench/ai.sh CHORUS LOADTEST OUT_DIR [ROUNDS]
# Prints per round: token-to-member p50/p99, edit p99 without and with the runs, deliveries.
# Env: RUNS (100), MEMBERS (10), TPS (50 tokens/s per run), TOKENS (250), EDIT_RATE (1/s),
# PHASE (10s). Traffic goes only to 127.0.0.1; every run is bounded.
set -euo pipefail
CHORUS=$1 LT=$2 OUT=$3 ROUNDS=${4:-3}
PORT=18093 STANDIN=127.0.0.1:18094
mkdir -p "$OUT"
for i in $(seq 1 "$ROUNDS"); do
  rm -rf "$OUT/data"
  taskset -c 0 "$CHORUS" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" \
    --ai-base-url "http://$STANDIN/v1" --ai-model standin \
    --ai-max-runs 1000 --ai-max-tenant-runs 1000 --ai-runs-per-minute 1000 > "$OUT/hub.log" 2>&1 &
  HUB=$!
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
    sleep 0.05
  done
  taskset -c 1 "$LT" ai --url "ws://127.0.0.1:$PORT/ws" --runs "${RUNS:-100}" \
    --members "${MEMBERS:-10}" --tokens-per-second "${TPS:-50}" --tokens "${TOKENS:-250}" \
    --edit-rate "${EDIT_RATE:-1}" --phase "${PHASE:-10s}" --standin-listen "$STANDIN" \
    --server-pid "$HUB" --no-progress --json "$OUT/ai-$i.json" > /dev/null || true
  kill "$HUB"; wait "$HUB" || true
  python3 - "$OUT/ai-$i.json" "$i" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency"]; m = r["metrics"]
t, a, b = l.get("token_to_member", {}), l.get("edit_without_ai", {}), l.get("edit_with_ai", {})
print(f"round {sys.argv[2]}: token->member p50 {t.get('p50_ms')} ms p99 {t.get('p99_ms')} ms max {t.get('max_ms')} ms;"
      f" edit p99 {a.get('p99_ms')} ms without, {b.get('p99_ms')} ms with;"
      f" tokens {int(m.get('token_deliveries', 0))}/{int(m.get('token_deliveries_expected', 0))};"
      f" problems {r['problems']}")
PY
done
