#!/usr/bin/env bash
# Developer aid: runs interop.test.mjs against the reference y-websocket
# server (@y/websocket-server, a devDependency) to validate the tests
# themselves. Extra arguments go to `node --test`.
#
#   ./run-reference.sh
set -euo pipefail
cd "$(dirname "$0")"

[ -d node_modules ] || npm ci

# Ask the kernel for a free loopback port (bind to port 0, read it back).
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

LOG=$(mktemp)
HOST=127.0.0.1 PORT="$PORT" node node_modules/@y/websocket-server/src/server.js >"$LOG" 2>&1 &
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

# Wait (bounded) until the server accepts TCP connections.
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "reference server exited early:" >&2; cat "$LOG" >&2; exit 1
  fi
  sleep 0.1
done
echo "reference server: $(cat "$LOG")"

# The reference server names the room after the whole URL path (minus the
# leading '/'), so a /ws prefix, like Chorus's, still gives every test its own
# room ("ws/<room>").
CHORUS_WS_URL="ws://127.0.0.1:$PORT/ws" node --test "$@" interop.test.mjs
