#!/usr/bin/env python3
"""Writes the hand-made seeds of each target's corpus (corpus/<target>/seed-*): well-formed
frames of both dialects, bot frames, REST bodies and envelopes. The fuzzers grow the rest;
the committed corpus is their minimized result (scripts/fuzz)."""
import json, os, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def uint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def var_bytes(b):
    return uint(len(b)) + b

def var_str(s):
    return var_bytes(s.encode())

def text_update(client, text, root="t"):
    # One block of string content (4) whose parent is root `root`, no delete set.
    return uint(1) + uint(1) + uint(client) + uint(0) + bytes([0x04]) + uint(1) + var_str(root) + var_str(text) + uint(0)

def nested(client, depth, root="t"):
    return uint(1) + uint(1) + uint(client) + uint(0) + bytes([0x08, 0x01]) + var_str(root) + uint(1) + bytes([0x75, 0x01]) * depth + bytes([0x7F, 0x00])

def sync(sub, payload):
    return uint(0) + uint(sub) + var_bytes(payload)

def awareness(client, clock, state):
    return uint(1) + var_bytes(uint(1) + uint(client) + uint(clock) + var_str(state))

SV_EMPTY = uint(0)
SV_ONE = uint(1) + uint(7) + uint(5)

sync_frames = {
    "step1-empty": sync(0, SV_EMPTY),
    "step1-one": sync(0, SV_ONE),
    "step2-text": sync(1, text_update(7, "hello")),
    "update-text": sync(2, text_update(7, "hello")),
    "update-empty": sync(2, uint(0) + uint(0)),
    "update-nested-11": sync(2, nested(7, 11)),
    "update-nested-70": sync(2, nested(7, 70)),
    "awareness": awareness(7, 1, '{"user":{"name":"a"},"cursor":null}'),
    "awareness-null": awareness(7, 2, "null"),
    "query-awareness": uint(3),
    "two-messages": sync(2, text_update(7, "ab")) + awareness(7, 1, "{}"),
}

def hp(address, body):
    return var_str(address) + body

hocuspocus = {
    "ping": bytes([9]),
    "auth": hp("doc", uint(2) + uint(0) + var_str("token") + var_str("3.0.0")),
    "sync": hp("doc", sync(0, SV_EMPTY)),
    "sync-reply": hp("doc", uint(4) + uint(1) + var_bytes(text_update(7, "hi"))),
    "update": hp("doc\0session", sync(2, text_update(9, "x"))),
    "awareness": hp("doc", awareness(9, 1, "{}")),
    "stateless": hp("doc", uint(5) + var_str('{"hello":1}')),
    "close": hp("doc", uint(7)),
    "unsupported": hp("doc", uint(8)),
}

bot = [
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "insert_text", "name": "t", "index": 0, "text": "hello"}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "delete_text", "name": "t", "index": 1, "length": 2}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "set_map", "name": "m", "key": "k", "value": {"a": [1, {"b": None}]}}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "push_array", "name": "a", "values": [1, "two", [3]]}, {"op": "delete_array", "name": "a", "index": 0, "length": 1}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "splice", "path": ["doc"], "index": 0, "insert": [{"type": "paragraph", "content": [{"type": "text", "text": "hi"}]}], "xml": True}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "splice_text", "path": ["doc", 0, "content", 0, "text"], "index": 1, "insert": "!"}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "set", "path": ["doc", 0, "attrs", "level"], "value": 2}]},
    {"v": 1, "type": "ops", "base": 0, "ops": [{"op": "set", "path": ["m", "k", "a"], "value": True}, {"op": "delete", "path": ["m", "k"]}]},
    {"v": 1, "type": "presence", "state": {"cursor": 3}},
    {"v": 1, "type": "chat", "text": "hi"},
    {"v": 1, "type": "ping", "id": 1},
]

rest = {
    "tenant": {"id": "acme", "name": "Acme", "settings": {"max_connections": 100, "messages_per_second": 50}},
    "tenant-patch": {"settings": {"search": {"language": "english"}}},
    "api-key": {"name": "ci", "role": "write"},
    "key": {"kid": "k1", "alg": "HS256", "secret": "c2VjcmV0"},
    "token": {"sub": "bot", "rooms": ["team/*"], "role": "read", "ttl": 60},
    "room": {"name": "team/notes", "meta": {"title": "Notes"}},
    "version": {"name": "before the rewrite"},
    "webhook": {"url": "https://example.com/hook", "secret": "s", "events": ["room.created"]},
    "webhook-private": {"url": "http://127.0.0.1:8080/hook"},
    "ops": {"ops": [{"op": "insert_text", "name": "t", "index": 0, "text": "hi"}, {"op": "set_map", "name": "m", "key": "k", "value": [[[1]]]}]},
}

ext = [
    {"v": 1, "type": "ping", "id": 3},
    {"v": 1, "type": "auth", "token": "t"},
    {"v": 1, "type": "ai.ask", "prompt": "summarize", "target": "chat"},
    {"v": 1, "type": "ai.cancel", "run": "r1"},
    {"v": 1, "type": "search", "id": "s1", "q": "pricing", "mode": "hybrid", "limit": 10, "room_prefix": "team/"},
    {"v": 1, "type": "saved", "through": 3},
    {"v": 1, "type": "pong"},
    {"v": 2, "type": "ping"},
]

def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

for k, v in sync_frames.items():
    write("sync_frame", k, v)
for k, v in hocuspocus.items():
    write("hocuspocus_frame", k, v)
write("json_ops", "all", "\n".join(json.dumps(f) for f in bot))
for i, f in enumerate(bot):
    write("json_ops", str(i), json.dumps(f))
for k, v in rest.items():
    write("rest_bodies", k, json.dumps(v))
for i, f in enumerate(ext):
    write("ext_envelope", str(i), json.dumps(f))
# update_apply takes arbitrary bytes as a script: a few lengths of patterned bytes start it.
for n in (16, 64, 256, 1024):
    write("update_apply", f"pattern-{n}", bytes((i * 37 + 11) % 256 for i in range(n)))
