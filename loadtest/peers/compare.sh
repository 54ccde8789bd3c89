#!/usr/bin/env bash
# Same workloads against Chorus and its peers, interleaved, ROUNDS rounds; prints medians and
# ratios as Markdown. Peers: the reference y-websocket server (@y/websocket-server), Hocuspocus
# (@hocuspocus/server, no extensions) and y-sweet (cargo install y-sweet 0.9.1), all keeping
# documents in memory; Chorus persists to SQLite as it always does. Chorus runs in the
# y-websocket dialect (`chorus`), in the Hocuspocus dialect (`chorus-hp`) and, on request, with
# one runtime worker (`chorus-1w`, since the load generator occupies the other core).
# `bare-relay` (loadtest/src/bin/bare-relay.rs) is not a peer but the floor: a relay with no
# CRDT and no storage, run in every scenario but edit-5mb (it hands joiners the updates it
# relayed, merged once); the last column divides its figure by the best peer's, i.e. the
# lowest ratio any server on this stack could reach.
#
# Usage: loadtest/peers/compare.sh [OUT_DIR]   (env: ROUNDS=3, SERVERS="chorus chorus-hp ...",
#        SCENARIOS="edit connect edit-5mb join-5mb edit-90k", optionally also join-500)
# Traffic goes only to 127.0.0.1; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/peers}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-"chorus chorus-1w chorus-hp y-websocket hocuspocus y-sweet bare-relay"}
SCENARIOS=${SCENARIOS:-"edit connect edit-5mb join-5mb edit-90k"}
mkdir -p "$OUT"
cargo build --release --bin chorus --bin chorus-loadtest --bin chorus-bare-relay
(cd loadtest/peers && npm ci --no-audit --no-fund --ignore-scripts > /dev/null)
TOOLS=target/peers-tools
if [[ " $SERVERS " == *" y-sweet "* ]] && [ ! -x "$TOOLS/y-sweet/bin/y-sweet" ]; then
  # Its own target dir, so it never fights over the workspace's build lock.
  cargo install y-sweet --version 0.9.1 --locked --root "$TOOLS/y-sweet" --target-dir "$TOOLS/build"
fi
B=target/release
PORT=18090

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return
    sleep 0.05
  done
  echo "server on $PORT did not start" >&2; exit 1
}

start() { # $1 = server; sets SRV (pid), URL and DIALECT
  DIALECT=y-websocket
  case "$1" in
    chorus|chorus-hp|chorus-1w)
      rm -rf "$OUT/data"
      WORKERS=0; [ "$1" = chorus-1w ] && WORKERS=1
      "$B/chorus" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" --worker-threads "$WORKERS" \
        > "$OUT/chorus.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT/ws"
      if [ "$1" = chorus-hp ]; then URL="ws://127.0.0.1:$PORT/hocuspocus"; DIALECT=hocuspocus; fi ;;
    bare-relay)
      "$B/chorus-bare-relay" "127.0.0.1:$PORT" > "$OUT/bare-relay.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT/ws" ;;
    y-websocket)
      HOST=127.0.0.1 PORT=$PORT node loadtest/peers/node_modules/@y/websocket-server/src/server.js \
        > "$OUT/y-websocket.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT" ;;
    hocuspocus)
      HOST=127.0.0.1 PORT=$PORT node loadtest/peers/hocuspocus-server.mjs > "$OUT/hocuspocus.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT"; DIALECT=hocuspocus ;;
    y-sweet)
      RUST_LOG=warn "$TOOLS/y-sweet/bin/y-sweet" serve --host 127.0.0.1 --port "$PORT" \
        > "$OUT/y-sweet.log" 2>&1 &
      SRV=$!; URL="ws://127.0.0.1:$PORT/d/{room}/ws/{room}" ;;
  esac
  wait_port
  if [ "$1" = y-sweet ]; then
    # y-sweet serves only documents created through its API first.
    python3 - "$PORT" <<'PY'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(500):
    c.request("POST", "/doc/new", json.dumps({"docId": f"r-{i}"}), {"content-type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  fi
}
stop() { kill "$SRV"; wait "$SRV" 2>/dev/null || true; }

lt() { # scenario-name server round, then chorus-loadtest arguments
  local name=$1 server=$2 round=$3; shift 3
  "$B/chorus-loadtest" "$@" --url "$URL" --dialect "$DIALECT" --room-prefix r- \
    --server-pid "$SRV" --json "$OUT/$name-$server-$round.json" > "$OUT/$name-$server-$round.txt" 2>&1 || true
}

for round in $(seq 1 "$ROUNDS"); do
  for server in $SERVERS; do
    for scn in $SCENARIOS; do
      # The floor applies no edits: only the scenarios where relaying (and handing joiners
      # what was relayed) is the whole job.
      if [ "$server" = bare-relay ] && [ "$scn" = edit-5mb ]; then continue; fi
      start "$server"
      case "$scn" in
        edit) lt edit "$server" "$round" edit --users 1000 --room-size 10 --rate 5 --duration 15s ;;
        connect) lt connect "$server" "$round" connect --sessions 5000 --rooms 500 --hold 1s ;;
        edit-5mb) lt edit-5mb "$server" "$round" edit --users 20 --room-size 10 --rate 2 \
          --duration 10s --doc-bytes 5000000 --timeout 60s ;;
        join-5mb) lt join-5mb "$server" "$round" join-storm --doc-bytes 5000000 --joiners 20 --timeout 60s ;;
        join-500) lt join-500 "$server" "$round" join-storm --doc-bytes 5000000 --joiners 500 --timeout 60s ;;
        edit-90k) lt edit-90k "$server" "$round" edit --users 1000 --room-size 10 --rate 10 \
          --duration 15s --timeout 60s ;;
      esac
      stop
      echo "round $round $server $scn done" >&2
    done
  done
done

python3 - "$OUT" "$SERVERS" <<'PY'
import json, statistics, sys, glob, os, re
out, servers = sys.argv[1], sys.argv[2].split()
peers = [s for s in servers if not s.startswith("chorus") and s != "bare-relay"]
def med(scn, server, get):
    vals = []
    # Exactly NAME-SERVER-ROUND.json: "chorus" must not pick up "chorus-1w" or "chorus-hp".
    pattern = re.compile(re.escape(f"{scn}-{server}-") + r"[0-9]+\.json$")
    for f in sorted(glob.glob(os.path.join(out, f"{scn}-{server}-*.json"))):
        if not pattern.match(os.path.basename(f)):
            continue
        try:
            vals.append(get(json.load(open(f))))
        except (KeyError, TypeError, ValueError):
            pass
    return (statistics.median(vals) if vals else float("nan")), len(vals)
lost = lambda r: r["metrics"]["deliveries_expected"] - r["metrics"]["deliveries_received"]
rows = [
    ("edit", "hub CPU per delivery (µs)", lambda r: r["metrics"]["server_cpu_us_per_delivery"]),
    ("edit", "delivery p50 (ms)", lambda r: r["latency"]["delivery"]["p50_ms"]),
    ("edit", "delivery p99 (ms)", lambda r: r["latency"]["delivery"]["p99_ms"]),
    ("edit", "deliveries lost", lost),
    ("connect", "memory per connection (KiB)", lambda r: r["metrics"]["server_bytes_per_connection"] / 1024),
    ("connect", "CPU per connection set-up (µs)", lambda r: r["metrics"]["server_cpu_us_per_connection"]),
    ("connect", "handshake p99 (ms)", lambda r: r["latency"]["handshake_to_synced"]["p99_ms"]),
    ("edit-5mb", "hub CPU per edit into 5 MB (µs)", lambda r: r["metrics"]["server_cpu_us_per_edit"]),
    ("edit-5mb", "delivery p99 (ms)", lambda r: r["latency"]["delivery"]["p99_ms"]),
    ("edit-5mb", "deliveries lost", lost),
    ("join-5mb", "20 joiners: p50 to full state (ms)", lambda r: r["latency"]["join_to_full_state"]["p50_ms"]),
    ("join-5mb", "20 joiners: p95 to full state (ms)", lambda r: r["latency"]["join_to_full_state"]["p95_ms"]),
    ("join-500", "500 joiners: p50 to full state (ms)", lambda r: r["latency"]["join_to_full_state"]["p50_ms"]),
    ("join-500", "500 joiners: p95 to full state (ms)", lambda r: r["latency"]["join_to_full_state"]["p95_ms"]),
    ("edit-90k", "hub CPU per delivery (µs)", lambda r: r["metrics"]["server_cpu_us_per_delivery"]),
    ("edit-90k", "delivery p99 (ms)", lambda r: r["latency"]["delivery"]["p99_ms"]),
    ("edit-90k", "deliveries lost", lost),
]
ours = [s for s in servers if s.startswith("chorus")]
floor = "bare-relay" in servers
print("| scenario | measure | " + " | ".join(servers) + " | " + " | ".join(f"{s} / best peer" for s in ours)
      + (" | bare-relay / best peer" if floor else "") + " |")
print("|---|---|" + "---|" * (len(servers) + len(ours) + floor))
for scn, name, get in rows:
    vals = {s: med(scn, s, get) for s in servers}
    if all(n == 0 for _, n in vals.values()):
        continue
    cells = [f"{v:.2f} (n={n})" if n else "-" for v, n in (vals[s] for s in servers)]
    best = [vals[p][0] for p in peers if vals[p][1] and vals[p][0] == vals[p][0]]
    ratios = []
    for s in ours:
        mine = vals[s][0]
        ratios.append(f"{mine / min(best):.2f}" if best and min(best) > 0 and mine == mine else "-")
    if floor:
        mine = vals["bare-relay"][0]
        ratios.append(f"{mine / min(best):.2f}" if best and min(best) > 0 and mine == mine else "-")
    print(f"| {scn} | {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
PY
