#!/usr/bin/env bash
# Same workload against Chorus and the reference y-websocket server (@y/websocket-server,
# in-memory, Node), interleaved, 3 rounds; prints medians and ratios as Markdown.
# Usage: loadtest/peers/compare.sh [OUT_DIR]
# Traffic goes only to 127.0.0.1; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/peers}
mkdir -p "$OUT"
cargo build --release --bin chorus --bin chorus-loadtest
(cd loadtest/peers && npm ci --no-audit --no-fund --ignore-scripts > /dev/null)
B=target/release
PORT=18090

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return
    sleep 0.05
  done
  echo "server on $PORT did not start" >&2; exit 1
}

start() { # $1 = server name; sets SRV (pid) and URL
  case "$1" in
    chorus)
      rm -rf "$OUT/data"
      "$B/chorus" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" > "$OUT/chorus.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT/ws" ;;
    y-websocket)
      HOST=127.0.0.1 PORT=$PORT node loadtest/peers/node_modules/@y/websocket-server/src/server.js \
        > "$OUT/y-websocket.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT" ;;
  esac
  wait_port
}
stop() { kill "$SRV"; wait "$SRV" 2>/dev/null || true; }

for round in 1 2 3; do
  for server in chorus y-websocket; do
    start "$server"
    "$B/chorus-loadtest" edit --url "$URL" --users 1000 --room-size 10 --rate 5 --duration 15s \
      --server-pid "$SRV" --json "$OUT/edit-$server-$round.json" > /dev/null || true
    stop
    start "$server"
    "$B/chorus-loadtest" connect --url "$URL" --sessions 5000 --rooms 500 --hold 1s \
      --server-pid "$SRV" --json "$OUT/connect-$server-$round.json" > /dev/null || true
    stop
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
servers = ["chorus", "y-websocket"]
def med(scn, server, get):
    vals = []
    for f in sorted(glob.glob(os.path.join(out, f"{scn}-{server}-*.json"))):
        r = json.load(open(f))
        try:
            vals.append(get(r))
        except (KeyError, TypeError):
            pass
    return statistics.median(vals) if vals else float("nan"), len(vals)
rows = [
    ("edit", "hub CPU per delivery (µs)", lambda r: r["metrics"]["server_cpu_us_per_delivery"]),
    ("edit", "delivery p50 (ms)", lambda r: r["latency"]["delivery"]["p50_ms"]),
    ("edit", "delivery p99 (ms)", lambda r: r["latency"]["delivery"]["p99_ms"]),
    ("edit", "deliveries lost", lambda r: r["metrics"]["deliveries_expected"] - r["metrics"]["deliveries_received"]),
    ("connect", "memory per connection (KiB)", lambda r: r["metrics"]["server_bytes_per_connection"] / 1024),
    ("connect", "CPU per connection set-up (µs)", lambda r: r["metrics"]["server_cpu_us_per_connection"]),
    ("connect", "handshake p99 (ms)", lambda r: r["latency"]["handshake_to_synced"]["p99_ms"]),
]
print("| scenario | measure | " + " | ".join(servers) + " | chorus / y-websocket |")
print("|---|---|" + "---|" * len(servers) + "---|")
for scn, name, get in rows:
    vals = [med(scn, s, get) for s in servers]
    cells = [f"{v:.2f} (n={n})" for v, n in vals]
    a, b = vals[0][0], vals[1][0]
    ratio = f"{a / b:.2f}" if b and b == b else "-"
    print(f"| {scn} | {name} | " + " | ".join(cells) + f" | {ratio} |")
PY
