#!/usr/bin/env python3
"""The capacity model of docs/SCALING.md, from the runs of loadtest/bench/scaling.sh.

Usage: python3 loadtest/bench/scaling_model.py OUT_DIR/runs.jsonl

Per-unit costs (medians over the rounds):
- a node's idle CPU (its background loops), per second;
- hub CPU per update, per delivery and per active room per second: the three unknowns of
  hub = U * c_update + D * c_delivery + R * c_room, solved by least squares from four
  one-node runs whose updates (U), deliveries (D) and active rooms (R) come in different
  proportions (rooms of 2 and of 10, at 1 and at 0.25 edits per second per user);
- Postgres CPU per update and per active room per second, the same way (two unknowns);
- Redis CPU per publish (every run's Redis CPU over its publishes, median);
- hub CPU per cursor move in a room of 200 viewers (the presence run);
- memory per connection and per open room (the same sessions over 200 and 2,000 rooms).

It then predicts the three-node runs (documents-heavy workload: rooms of 5, an edit per 2 s
each) from those costs alone, prints the error, and projects the nodes, Redis and Postgres
for 100,000 and 1,000,000 concurrent users under both workloads of the plan.
"""

import json
import math
import statistics
import sys
from collections import defaultdict

# What a planned machine may use: of a node's 2 cores, 60 % (the rest is headroom for bursts
# and joins); of its 4 GiB, 70 %; of a Redis shard's one thread, 50 %; of a Postgres core, 60 %.
NODE_CORES, NODE_CPU_USE = 2, 0.6
NODE_BYTES, NODE_MEM_USE = 4 * 2**30, 0.7
REDIS_USE = 0.5
PG_USE = 0.6


def load(path):
    runs = defaultdict(list)
    for line in open(path):
        line = line.strip()
        if line:
            r = json.loads(line)
            runs[r["name"].rsplit("-", 1)[0]].append(r)
    return runs


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def solve(a, b):
    """Least squares for a x = b (normal equations, Gaussian elimination)."""
    n = len(a[0])
    ata = [[sum(r[i] * r[j] for r in a) for j in range(n)] for i in range(n)]
    atb = [sum(r[i] * y for r, y in zip(a, b)) for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(ata[r][c]))
        ata[c], ata[p] = ata[p], ata[c]
        atb[c], atb[p] = atb[p], atb[c]
        for r in range(n):
            if r != c:
                f = ata[r][c] / ata[c][c]
                ata[r] = [x - f * y for x, y in zip(ata[r], ata[c])]
                atb[r] -= f * atb[c]
    return [atb[i] / ata[i][i] for i in range(n)]


def main(path):
    runs = load(path)
    idle1 = med(runs["idle-1"], "idle_cpu_s") / 20
    idle3 = med(runs["idle-3"], "idle_cpu_s") / 20 / 3
    # (name, users, room size, edits per second per user)
    units = [
        ("unit-r2", 1000, 2, 1.0),
        ("unit-r10", 1000, 10, 1.0),
        ("unit-r2slow", 1000, 2, 0.25),
        ("unit-r10slow", 1000, 10, 0.25),
    ]
    rows_hub, y_hub, rows_pg, y_pg = [], [], [], []
    for name, users, size, _ in units:
        rs = runs[name]
        secs = rs[0]["seconds"]
        u, d = med(rs, "updates") / secs, med(rs, "deliveries") / secs
        rooms = users / size
        rows_hub.append([u, d, rooms])
        y_hub.append(med(rs, "hub_cpu_s") / secs - idle1)
        rows_pg.append([u, rooms])
        y_pg.append(med(rs, "pg_cpu_s") / secs)
    c_update, c_delivery, c_room = solve(rows_hub, y_hub)
    p_update, p_room = solve(rows_pg, y_pg)
    fit = []
    for (name, *_), x, y, xp, yp in zip(units, rows_hub, y_hub, rows_pg, y_pg):
        h = x[0] * c_update + x[1] * c_delivery + x[2] * c_room
        p = xp[0] * p_update + xp[1] * p_room
        fit.append(f"{name} hub {(h - y) / y * 100:+.0f} %, Postgres {(p - yp) / yp * 100:+.0f} %")
    per_publish = statistics.median(
        r["redis_cpu_s"] / r["published"]
        for name in runs
        for r in runs[name]
        if r.get("published", 0) > 1000
    )
    pres = runs["presence-200"]
    c_cursor = (med(pres, "hub_cpu_s") / pres[0]["seconds"] - idle1) / (
        med(pres, "updates") / pres[0]["seconds"]
    )
    m200 = med(runs["mem-rooms200"], "bytes_per_connection")
    m2000 = med(runs["mem-rooms2000"], "bytes_per_connection")
    # 2,000 sessions: (2000 rooms - 200 rooms) more rooms account for the difference.
    mem_room = (m2000 - m200) * 2000 / 1800
    mem_conn = m200 - mem_room * 200 / 2000
    us = 1e6
    print("Per-unit costs (medians of the rounds):")
    print(f"  node idle CPU: {idle1 * 1000:.1f} ms/s alone, {idle3 * 1000:.1f} ms/s per node of 3")
    print(f"  hub CPU per update {c_update * us:.1f} us, per delivery {c_delivery * us:.1f} us, "
          f"per active room {c_room * us:.0f} us/s")
    print(f"  Postgres CPU per update {p_update * us:.1f} us, per active room {p_room * us:.0f} us/s"
          f" (durable updates/s on one core, rooms aside: {1 / p_update:,.0f})")
    print(f"  Redis CPU per publish {per_publish * us:.2f} us")
    print(f"  hub CPU per cursor move, rooms of 200: {c_cursor * us:.1f} us")
    print(f"  memory per connection {mem_conn:,.0f} B, per open room {mem_room:,.0f} B")
    print(f"  the fit on its own runs: {'; '.join(fit)}")
    for r in runs["spread-r10"]:
        secs = r["seconds"]
        print(f"  rooms of 10 spread over 3 nodes: {r['hub_cpu_s'] / secs:.3f} cores of hubs "
              f"for {r['updates'] / secs:,.0f} updates/s (alone: "
              f"{statistics.median(x['hub_cpu_s'] / x['seconds'] for x in runs['unit-r10']):.3f})")

    def docs(users):
        u, d, rooms = users * 0.5, users * 0.5 * 4, users / 5
        return u, d, rooms

    print("\nThe check: three nodes, documents-heavy (rooms of 5, an edit per 2 s each):")
    worst = 0.0
    for name in sorted(n for n in runs if n.startswith("docs-")):
        users = int(name.split("-")[1])
        u, d, rooms = docs(users)
        hub = 3 * idle3 + u * c_update + d * c_delivery + rooms * c_room
        pg = u * p_update + rooms * p_room
        redis = u * per_publish
        for r in runs[name]:
            secs = r["seconds"]
            got = (r["hub_cpu_s"] / secs, r["pg_cpu_s"] / secs, r["redis_cpu_s"] / secs)
            errs = [(p - g) / g * 100 for p, g in zip((hub, pg, redis), got)]
            worst = max(worst, abs(errs[0]), abs(errs[1]))
            print(f"  {users:,} users: hubs {got[0]:.3f} cores, model {hub:.3f} ({errs[0]:+.0f} %);"
                  f" Postgres {got[1]:.3f}, model {pg:.3f} ({errs[1]:+.0f} %);"
                  f" Redis {got[2]:.3f}, model {redis:.3f} ({errs[2]:+.0f} %)")
    print(f"  worst error of hubs and Postgres: {worst:.0f} %")

    print("\nProjections (a node: 2 cores at 60 %, 4 GiB at 70 %; a Redis shard at 50 % of a"
          " core; Postgres cores at 60 %):")
    def nodes(cpu, users, rooms):
        """Hub nodes for `cpu` cores of load and that many connections and rooms."""
        by_cpu = cpu / (NODE_CORES * NODE_CPU_USE - idle3)
        by_mem = (users * mem_conn + rooms * mem_room) / (NODE_BYTES * NODE_MEM_USE)
        return f"{math.ceil(max(by_cpu, by_mem))} nodes (CPU {by_cpu:.1f}, memory {by_mem:.1f})"

    for users in (100_000, 1_000_000):
        u, d, rooms = docs(users)
        cpu = u * c_update + d * c_delivery + rooms * c_room
        print(f"  documents-heavy, {users:,} users: {u:,.0f} updates/s, {d:,.0f} deliveries/s,"
              f" {rooms:,.0f} rooms; hubs {cpu:.1f} cores -> {nodes(cpu, users, rooms)};"
              f" Redis {u * per_publish:.2f} cores -> {math.ceil(u * per_publish / REDIS_USE)}"
              f" shards; Postgres {u * p_update:.1f} cores for updates + {rooms * p_room:.1f} for"
              f" search indexing -> {math.ceil((u * p_update + rooms * p_room) / PG_USE)} cores")
        moves, rooms = users * 1.0, users / 200
        cpu = moves * c_cursor
        print(f"  presence-heavy, {users:,} users: {moves:,.0f} cursor moves/s, "
              f"{moves * 199:,.0f} deliveries/s, {rooms:,.0f} rooms; hubs {cpu:.1f} cores -> "
              f"{nodes(cpu, users, rooms)}; Redis {moves * per_publish:.2f} cores -> "
              f"{math.ceil(moves * per_publish / REDIS_USE)} shards; Postgres: nothing per move")

if __name__ == "__main__":
    main(sys.argv[1])
