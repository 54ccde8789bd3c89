#!/usr/bin/env python3
"""A Chorus bot in plain Python: no CRDT library, only the `websockets` package.

It joins a room over the hub's JSON mode (docs/PROTOCOL.md, "JSON mode"), keeps the document
as JSON by applying the hub's deltas, and answers commands typed in the room's chat:

    /help              what it can do
    /list              the checklist items and whether they are ticked
    /tick <text>       ticks the first item whose text contains <text>
    /untick <text>     unticks it
    /add <text>        adds an item to the checklist (creating one if there is none)

The checklist is the editor's: Tiptap task lists (`taskList` / `taskItem` nodes with a
`checked` attribute) in the `default` XML fragment, so what the bot ticks is ticked in every
open editor.

    pip install -r requirements.txt
    python3 checklist_bot.py --hub ws://127.0.0.1:8080 --room demo [--token JWT]

It runs until the hub closes the connection or it gets SIGINT / SIGTERM.
"""

import argparse
import asyncio
import itertools
import json
import signal
import sys
import urllib.parse

import websockets


# -- the document view -------------------------------------------------------------------

def splice_text(s, index, delete, insert):
    """Replaces `delete` UTF-16 code units at `index` (the hub counts like JavaScript)."""
    units = s.encode("utf-16-le")
    return (units[: 2 * index] + insert.encode("utf-16-le") + units[2 * (index + delete):]).decode(
        "utf-16-le"
    )


def at(view, path):
    node = view
    for step in path:
        node = node[step]
    return node


def apply_delta(view, ops):
    """Applies the hub's path ops to the view, as the hub computed them."""
    for op in ops:
        path = op["path"]
        kind = op["op"]
        if kind == "set":
            at(view, path[:-1])[path[-1]] = op["value"]
        elif kind == "delete":
            del at(view, path[:-1])[path[-1]]
        elif kind == "splice":
            items = at(view, path)
            i = op["index"]
            items[i : i + op.get("delete", 0)] = op.get("insert", [])
        elif kind == "splice_text":
            parent = at(view, path[:-1])
            parent[path[-1]] = splice_text(
                parent[path[-1]], op["index"], op.get("delete", 0), op.get("insert", "")
            )
        else:
            raise ValueError(f"unknown delta op {kind!r}")


def text_of(node):
    if node.get("type") == "text":
        return node.get("text", "")
    return "".join(text_of(c) for c in node.get("content", []) if isinstance(c, dict))


def walk(nodes, path):
    """Every node below `nodes` (a list at `path`) with its path."""
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            continue
        here = path + [i]
        yield here, node
        if isinstance(node.get("content"), list):
            yield from walk(node["content"], here + ["content"])


def items(view):
    return [
        (path, node)
        for path, node in walk(view.get("default", []), ["default"])
        if node.get("type") == "taskItem"
    ]


def new_item(text):
    return {
        "type": "taskItem",
        "attrs": {"checked": False},
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    }


# -- the bot -----------------------------------------------------------------------------

class Bot:
    def __init__(self, ws):
        self.ws = ws
        self.view = {}
        self.version = 0
        self.ids = (f"bot-{n}" for n in itertools.count(1))
        # Commands waiting for their ack, by request id: (command, attempts).
        self.pending = {}

    async def send(self, frame):
        frame["v"] = 1
        await self.ws.send(json.dumps(frame))

    async def say(self, text):
        await self.send({"type": "chat", "id": next(self.ids), "text": text})

    async def edit(self, ops, command, attempts=0):
        rid = next(self.ids)
        self.pending[rid] = (command, attempts)
        await self.send({"type": "ops", "id": rid, "base": self.version, "ops": ops})

    async def command(self, text, attempts=0):
        word, _, arg = text.strip().partition(" ")
        arg = arg.strip()
        found = items(self.view)
        if word == "/help":
            await self.say("Commands: /list, /tick <text>, /untick <text>, /add <text>")
        elif word == "/list":
            if not found:
                await self.say("The checklist is empty.")
            else:
                lines = [("[x] " if n["attrs"].get("checked") else "[ ] ") + text_of(n) for _, n in found]
                await self.say("\n".join(lines))
        elif word in ("/tick", "/untick") and arg:
            match = next(((p, n) for p, n in found if arg.lower() in text_of(n).lower()), None)
            if match is None:
                await self.say(f"No item matches {arg!r}.")
                return
            path, _ = match
            await self.edit(
                [{"op": "set", "path": path + ["attrs", "checked"], "value": word == "/tick"}],
                text,
                attempts,
            )
        elif word == "/add" and arg:
            lists = [p for p, n in walk(self.view.get("default", []), ["default"]) if n.get("type") == "taskList"]
            if lists:
                content = lists[0] + ["content"]
                index = len(at(self.view, content))
                op = {"op": "splice", "path": content, "index": index, "insert": [new_item(arg)]}
            else:
                index = len(self.view.get("default", []))
                op = {
                    "op": "splice",
                    "path": ["default"],
                    "index": index,
                    "xml": True,
                    "insert": [{"type": "taskList", "content": [new_item(arg)]}],
                }
            await self.edit([op], text, attempts)

    async def handle(self, frame):
        kind = frame.get("type")
        if kind == "snapshot":
            self.view, self.version = frame["doc"], frame["version"]
        elif kind == "delta":
            apply_delta(self.view, frame["ops"])
            self.version = frame["version"]
        elif kind == "chat":
            text = frame["message"].get("text", "")
            if text.startswith("/"):
                await self.command(text)
        elif kind == "ack" and frame.get("id") in self.pending:
            command, _ = self.pending.pop(frame["id"])
            await self.say(f"Done: {command}")
        elif kind == "error":
            command, attempts = self.pending.pop(frame.get("id"), (None, 0))
            if command and frame.get("code") in ("conflict", "stale") and attempts < 3:
                # Someone changed that item meanwhile: the view is newer now; try again on it.
                if frame["code"] == "stale":
                    await self.send({"type": "snapshot"})
                await self.command(command, attempts + 1)
            elif command:
                await self.say(f"Could not do {command!r}: {frame.get('message')}")
            else:
                print(f"hub error: {frame}", file=sys.stderr)

    async def run(self):
        await self.send({"type": "presence", "state": {"status": "listening for /commands"}})
        async for message in self.ws:
            await self.handle(json.loads(message))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="ws://127.0.0.1:8080", help="the hub's WebSocket address")
    parser.add_argument("--room", required=True)
    parser.add_argument("--token", help="a client JWT (write role); none on an anonymous local hub")
    args = parser.parse_args()

    query = {"format": "json"}
    if args.token:
        query["token"] = args.token
    url = f"{args.hub}/ws/{urllib.parse.quote(args.room, safe='')}?{urllib.parse.urlencode(query)}"
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with websockets.connect(url, max_size=64 << 20) as ws:
        bot = Bot(ws)
        print(f"joined {args.room}", flush=True)
        task = asyncio.ensure_future(bot.run())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        if task.done() and task.exception():
            raise task.exception()
        print(f"left {args.room} ({ws.close_code} {ws.close_reason})", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except websockets.exceptions.ConnectionClosedError as e:
        sys.exit(f"the hub closed the connection: {e}")
