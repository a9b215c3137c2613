#!/usr/bin/env python3
"""The history checker of tests/e2e-chaos.sh: a seeded random history of task events,
published to JetStream with an independent client (PyPI nats-py), and a check of what the
app made of it against a model of what it should have made.

  chaos.py publish --server URL --seed S --events N --prefix P --history FILE [--rate R]
  chaos.py mark --base URL --token T --out FILE
  chaos.py check --base URL --history FILE --token T [--mark FILE] [--timeout S] [--probes N]
  chaos.py probe --server URL --bases URL,URL --id ID --since T --limit S

publish: N events over about N/12 tasks: creates, updates, deletes, creates of existing and
of deleted tasks (re-creates), updates of deleted tasks, in a random order per task; each
task's events go out one after another (each awaits the stream's acknowledgement), tasks
interleave. Among them, stray events on subjects the stream stores but the writer cannot use
(`tasks.<kind>.x`, `tasks.other`), malformed payloads, and valid events carrying a forged
`spin-nats-stream-sequence` header. Every event has a `Nats-Msg-Id`, so a publish that failed
(the server died) is sent again, for up to 120 s, and the stream stores it once. --rate
spreads the publishing over time, so the faults the suite injects land in the middle of it.
The history (every event, in publish order per task) goes to FILE.

check: the model applies each task's events in order (a create makes version 1, or + 1 over
an existing task; an update + 1, or a dead letter when the task does not exist; a delete
removes it). It waits until every task reads back (GET /api/tasks/<id>) as the model says, or
--timeout passes, then names every anomaly:
  missing      the model has the task, the app does not (an event lost);
  resurrected  the app has a task the model deleted;
  lost         the app is behind the model (version lower: an update lost);
  doubled      the app is past the model (version higher: an event applied twice);
  reordered    same version, other title or status (events applied out of order);
and compares the run's dead letters (GET /api/dead-letters) with the events that must be
dead letters, each exactly once. With --mark (what `mark` read before the history was
published: the change feed's head and the counters), it also reads the change feed after
that head, as stored (the slots GET /api/events frames; --redis-port), and compares each
task's changes with the model's, in order (kind and version; each applied event once: `feed`
anomalies), and the counters' growth
(events and replays applied, GET /metrics) with the number of events the model applies
(`counters`; --probes: creates `probe` made besides the history). Exits 1 on any anomaly.

probe: how soon delivery resumes after a fault. Publishes one create of task ID (an id
outside the history's prefix) through JetStream, sent again until the stream acknowledges
it, then reads GET /api/tasks/ID from whichever of --bases answers until the task is there.
Prints the seconds from --since (Unix time: when the fault was over) to the acknowledgement
and to the task being readable; exits 1 when that passes --limit seconds.
"""
import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

STATUSES = ["pending", "in_progress", "completed", "cancelled"]


def history(seed: int, events: int, prefix: str) -> list:
    """The events, in one global publish order that keeps each task's order."""
    rng = random.Random(seed)
    tasks = max(1, events // 12)
    per_task = {f"{prefix}{i:05d}": [] for i in range(tasks)}
    ids = list(per_task)
    alive = dict.fromkeys(ids, False)
    strays = []
    for n in range(events):
        roll = rng.random()
        if roll < 0.02:
            kind = rng.choice(["created", "updated", "deleted"])
            tid = rng.choice(ids)
            strays.append({"subject": rng.choice([f"tasks.{kind}.x", "tasks.other"]),
                           "payload": json.dumps({"id": tid, "title": f"{tid} stray{n}"}),
                           "expect": "dead"})
            continue
        if roll < 0.03:
            strays.append({"subject": "tasks.created", "payload": "{oops " + prefix + str(n),
                           "expect": "dead"})
            continue
        tid = rng.choice(ids)
        evs = per_task[tid]
        k = len(evs) + 1
        if not evs:
            kind = "created"
        elif alive[tid]:
            kind = rng.choices(["updated", "deleted", "created"], weights=[75, 10, 15])[0]
        else:
            kind = rng.choices(["created", "updated", "deleted"], weights=[75, 20, 5])[0]
        alive[tid] = kind != "deleted"
        ev = {"task": tid, "k": k, "subject": f"tasks.{kind}"}
        body = {"id": tid}
        if kind != "deleted":
            body["title"] = f"{tid} e{k}"
            if rng.random() < 0.3:
                body["status"] = rng.choice(STATUSES)
        ev["body"] = body
        ev["forged"] = rng.random() < 0.05
        evs.append(ev)
    # One global order: a random interleaving of the tasks' sequences, strays among them.
    queues = [list(v) for v in per_task.values() if v] + [[s] for s in strays]
    order = []
    while queues:
        i = rng.randrange(len(queues))
        order.append(queues[i].pop(0))
        if not queues[i]:
            queues.pop(i)
    return order


def model(events: list):
    """(final state per task: None or (version, title, status), events that must be dead letters,
    the changes each task goes through: (kind, version or None) in order)."""
    state, dead, changes = {}, [], {}
    for ev in events:
        if "task" not in ev:
            dead.append(ev)
            continue
        tid, kind, body = ev["task"], ev["subject"].split(".")[1], ev["body"]
        cur = state.get(tid)
        if kind == "deleted":
            state[tid] = None
        elif kind == "created":
            if cur is None:
                state[tid] = (1, body["title"], body.get("status", "pending"))
            else:
                state[tid] = (cur[0] + 1, body["title"], body.get("status", cur[2]))
        elif cur is None:
            dead.append(ev)
            continue
        else:
            state[tid] = (cur[0] + 1, body["title"], body.get("status", cur[2]))
        after = state[tid]
        changes.setdefault(tid, []).append((kind, after[0] if after else None))
    return state, dead, changes


async def publish(args) -> int:
    import nats

    events = history(args.seed, args.events, args.prefix)
    with open(args.history, "w") as f:
        json.dump({"seed": args.seed, "prefix": args.prefix, "events": events}, f)
    async def quiet(_e) -> None:
        # The server going away is one of the faults: publishes retry on their own.
        return None

    nc = await nats.connect(servers=args.server.split(","), max_reconnect_attempts=-1,
                            reconnect_time_wait=0.2, connect_timeout=2, error_cb=quiet)
    js = nc.jetstream(timeout=5)
    # Each task's events in order: one lane per task, a bounded number of lanes at once.
    lanes, order = {}, []
    for i, ev in enumerate(events):
        key = ev.get("task", f"stray-{i}")
        lanes.setdefault(key, []).append((i, ev))
        if key not in order:
            order.append(key)
    gate = asyncio.Semaphore(32)
    interval = 1.0 / args.rate if args.rate else 0.0
    next_slot = [time.monotonic()]
    failed = [0]
    done = [0]

    async def one(i: int, ev: dict) -> None:
        if interval:
            slot = next_slot[0] = max(next_slot[0] + interval, time.monotonic())
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
        if "task" in ev:
            subject, payload = ev["subject"], json.dumps(ev["body"]).encode()
        else:
            subject, payload = ev["subject"], ev["payload"].encode()
        headers = {"Nats-Msg-Id": f"{args.prefix}{i}"}
        if ev.get("forged"):
            headers["spin-nats-stream-sequence"] = "18446744073709551615"
        deadline = time.monotonic() + 120
        while True:
            try:
                await js.publish(subject, payload, headers=headers)
                done[0] += 1
                return
            except Exception as e:  # the server died or is electing: send it again
                if time.monotonic() > deadline:
                    print(f"not acknowledged after 120 s: {subject} #{i}: {e}", file=sys.stderr)
                    failed[0] += 1
                    return
                await asyncio.sleep(0.2)

    async def lane(key: str) -> None:
        async with gate:
            for i, ev in lanes[key]:
                await one(i, ev)

    started = time.monotonic()
    await asyncio.gather(*(lane(k) for k in order))
    await nc.drain()
    print(f"published {done[0]} of {len(events)} events in {time.monotonic() - started:.1f} s"
          f" ({failed[0]} not acknowledged)")
    return 1 if failed[0] else 0


def get_text(url: str, token: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def counters(base: str, token: str) -> dict:
    """The feed head and the applied counts (events and replays) from GET /metrics."""
    text = get_text(f"{base}/metrics", token)
    applied, head = 0, None
    for line in text.splitlines():
        m = re.match(r'tasks_(events|retries)_total\{outcome="applied",[^}]*\} (\d+)$', line)
        if m:
            applied += int(m.group(2))
        m = re.match(r"tasks_change_feed_head (\d+)$", line)
        if m:
            head = int(m.group(1))
    if head is None:
        raise SystemExit(f"GET /metrics has no tasks_change_feed_head:\n{text[:500]}")
    return {"head": head, "applied": applied}


def mark(args) -> int:
    json.dump(counters(args.base, args.token), open(args.out, "w"))
    return 0


def read_feed(redis_port: int, after: int, upto: int, prefix: str) -> dict:
    """Each task's changes in the change feed as stored (the `feed` store: database 2 of
    runtime-config.redis.toml's layout, read with redis-cli), numbers after `after` up to
    `upto`, as (kind, version). The stream (GET /api/events) resets a client more than
    1,024 changes behind, and a whole seed is more: the checker reads the slots it frames."""
    found = {}
    capacity = 10_000  # tasks_domain::keys::FEED_CAPACITY
    if upto - after > capacity:
        raise SystemExit(f"the feed keeps {capacity} changes; the seed made {upto - after}")
    seqs = list(range(after + 1, upto + 1))
    for i in range(0, len(seqs), 500):
        chunk = seqs[i:i + 500]
        keys = [f"feed:slot:{n % capacity:05}" for n in chunk]
        out = subprocess.run(["redis-cli", "-p", str(redis_port), "-n", "2", "--raw", "MGET", *keys],
                             check=True, capture_output=True, text=True).stdout.split("\n")
        for n, value in zip(chunk, out):
            if not value:
                continue  # not written (a call that died with its numbers), or yet
            slot = json.loads(value)
            change = slot.get("change")
            if slot.get("seq") != n or not change or not change["id"].startswith(prefix):
                continue
            found.setdefault(change["id"], []).append((change["kind"], change.get("version")))
    return found


def get_json(url: str, token: str = ""):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None


def read_tasks(base: str, ids) -> dict:
    out = {}
    for tid in ids:
        status, body = get_json(f"{base}/api/tasks/{tid}")
        if status == 200:
            out[tid] = (body["version"], body["title"], body["status"])
        elif status == 404:
            out[tid] = None
        else:
            out[tid] = ("error", status)
    return out


def anomalies(want: dict, have: dict) -> dict:
    kinds = {k: [] for k in ["missing", "resurrected", "lost", "doubled", "reordered", "unreadable"]}
    for tid, w in want.items():
        h = have.get(tid)
        if isinstance(h, tuple) and h and h[0] == "error":
            kinds["unreadable"].append((tid, h[1]))
        elif w is None and h is not None:
            kinds["resurrected"].append((tid, h))
        elif w is not None and h is None:
            kinds["missing"].append((tid, w))
        elif w is None:
            continue
        elif h[0] < w[0]:
            kinds["lost"].append((tid, w, h))
        elif h[0] > w[0]:
            kinds["doubled"].append((tid, w, h))
        elif h != w:
            kinds["reordered"].append((tid, w, h))
    return kinds


def dead_letters(base: str, token: str, prefix: str) -> list:
    found, cursor = [], None
    while True:
        url = f"{base}/api/dead-letters?limit=100" + (f"&cursor={cursor}" if cursor else "")
        status, page = get_json(url, token)
        if status != 200:
            raise SystemExit(f"GET /api/dead-letters answered {status}")
        for d in page["deadLetters"]:
            if prefix in d.get("payload", ""):
                found.append(d)
        cursor = page.get("nextCursor")
        if not cursor:
            return found


def check(args) -> int:
    run = json.load(open(args.history))
    want, dead, changes = model(run["events"])
    ids = sorted(want)
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    # What was still behind at each read, for a history that takes long to settle.
    progress = []
    while True:
        have = read_tasks(args.base, ids)
        found = anomalies(want, have)
        if not any(found.values()) or time.monotonic() > deadline:
            break
        behind = {k: len(v) for k, v in found.items() if v}
        example = next(iter(v[0] for v in found.values() if v))
        progress.append(f"{time.strftime('%H:%M:%S')} +{time.monotonic() - started:.0f} s: "
                        f"{behind}, e.g. {example}")
        time.sleep(2)
    settled = time.monotonic() - started
    letters = dead_letters(args.base, args.token, run["prefix"])
    wanted = sorted(ev["payload"] if "payload" in ev else json.dumps(ev["body"]) for ev in dead)
    got = sorted(d.get("payload", "") for d in letters)
    # Dead letters keep the payload as published; compare the multisets.
    extra = list(got)
    for w in wanted:
        if w in extra:
            extra.remove(w)
    missing = list(wanted)
    for g in got:
        if g in missing:
            missing.remove(g)
    events = len(run["events"])
    tasks_alive = sum(1 for v in want.values() if v is not None)
    print(f"seed {run['seed']}: {events} events, {len(ids)} tasks ({tasks_alive} at the end), "
          f"{len(dead)} dead letters due; settled in {settled:.1f} s")
    for line in progress[:3] + (["…"] if len(progress) > 6 else []) + progress[max(3, len(progress) - 3):]:
        print(f"  not yet settled at {line}")
    bad = 0
    for kind, items in found.items():
        if items:
            bad += len(items)
            print(f"  {kind}: {len(items)}, e.g. {items[:3]}")
    if missing:
        bad += len(missing)
        print(f"  dead letters missing: {len(missing)}, e.g. {missing[:3]}")
    if extra:
        bad += len(extra)
        print(f"  dead letters extra (twice, or not due): {len(extra)}, e.g. {extra[:3]}")
    if args.mark:
        before = json.load(open(args.mark))
        applied = sum(len(c) for c in changes.values())
        due = applied + args.probes
        # The feed and the counters are written after the tasks (a call's last write), and
        # a change whose call died before them is recorded when its event is delivered
        # again (after ack_wait): read both until they agree with the model, or 60 s pass.
        deadline = time.monotonic() + 60
        while True:
            now = counters(args.base, args.token)
            feed = read_feed(args.redis_port, before["head"], now["head"], run["prefix"])
            wrong = [(t, c, feed.get(t, [])) for t, c in sorted(changes.items()) if feed.get(t, []) != c]
            wrong += [(t, [], c) for t, c in sorted(feed.items()) if t not in changes]
            if (not wrong and now["applied"] - before["applied"] == due) or time.monotonic() > deadline:
                break
            time.sleep(2)
        print(f"  change feed: {sum(len(c) for c in feed.values())} changes of {applied} "
              f"applied events; counters: {now['applied'] - before['applied']} applied"
              + (f" ({args.probes} of them probes)" if args.probes else ""))
        if wrong:
            bad += len(wrong)
            print(f"  feed: {len(wrong)} tasks whose changes differ (model, feed), e.g. {wrong[:2]}")
        if now["applied"] - before["applied"] != due:
            bad += 1
            print(f"  counters: {now['applied'] - before['applied']} applied counted, {due} due")
    print(f"  anomalies: {bad}")
    return 1 if bad else 0


async def probe(args) -> int:
    give_up = args.since + args.limit + 30
    try:
        return await asyncio.wait_for(probe_once(args, give_up), timeout=give_up - time.time())
    except asyncio.TimeoutError:
        print(f"{args.id}: not applied {time.time() - args.since:.0f} s after the fault")
        return 1


async def probe_once(args, give_up: float) -> int:
    import nats

    async def quiet(_e) -> None:
        return None

    nc = await nats.connect(servers=args.server.split(","), max_reconnect_attempts=-1,
                            reconnect_time_wait=0.2, connect_timeout=2, error_cb=quiet)
    js = nc.jetstream(timeout=5)
    payload = json.dumps({"id": args.id, "title": "probe"}).encode()
    while True:
        try:
            await js.publish("tasks.created", payload, headers={"Nats-Msg-Id": args.id})
            break
        except Exception:  # the server died or is electing: send it again
            await asyncio.sleep(0.2)
    acked = time.time() - args.since
    await nc.close()
    while time.time() < give_up:
        for base in args.bases.split(","):
            try:
                status, _ = get_json(f"{base}/api/tasks/{args.id}")
            except OSError:
                continue  # that instance is down (the fault's own, restarting)
            if status == 200:
                applied = time.time() - args.since
                verdict = "" if applied <= args.limit else f" (over {args.limit:.0f} s)"
                print(f"{args.id}: acknowledged after {acked:.1f} s, applied after {applied:.1f} s{verdict}")
                return 0 if applied <= args.limit else 1
            break
        await asyncio.sleep(0.1)
    print(f"{args.id}: acknowledged after {acked:.1f} s, not applied {time.time() - args.since:.0f} s after the fault")
    return 1


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish")
    p.add_argument("--server", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--prefix", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--rate", type=float, default=0)
    c = sub.add_parser("check")
    c.add_argument("--base", required=True)
    c.add_argument("--history", required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--timeout", type=float, default=120)
    c.add_argument("--mark")
    c.add_argument("--redis-port", type=int, help="the Redis holding the feed store (with --mark)")
    c.add_argument("--probes", type=int, default=0, help="creates `probe` applied besides the history")
    r = sub.add_parser("probe")
    r.add_argument("--server", required=True)
    r.add_argument("--bases", required=True)
    r.add_argument("--id", required=True)
    r.add_argument("--since", type=float, required=True)
    r.add_argument("--limit", type=float, required=True)
    m = sub.add_parser("mark")
    m.add_argument("--base", required=True)
    m.add_argument("--token", required=True)
    m.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "publish":
        return asyncio.run(publish(args))
    if args.cmd == "mark":
        return mark(args)
    if args.cmd == "probe":
        return asyncio.run(probe(args))
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
