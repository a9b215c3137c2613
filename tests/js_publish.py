#!/usr/bin/env python3
"""Publishes task events to JetStream with an independent client (PyPI
nats-py), each awaiting the stream's acknowledgement, and prints one line
per acknowledged event to --acked (for suites that stop things mid-burst).

  js_publish.py --server URL[,URL...] --tasks N [--updates U] [--prefix P] [--acked FILE]
                [--retry-seconds S] [--subject-prefix tasks]

With several servers (a cluster), one connection per server, each able to fail over to
the others; a task's events go round-robin over them. Every event carries a Nats-Msg-Id
(`<id>-<k>`), so with --retry-seconds a publish that failed (its server died) is sent again
for up to S seconds and the stream stores it once.

For each of N tasks: a tasks.created, then U tasks.updated each setting the
title to "<id> v<k>" (k = 2..U+1), published in that order per task; tasks
interleave, up to 64 publishes in flight. Exits 1 if any publish was not
acknowledged (the count of those is printed).
"""
import argparse
import asyncio
import json
import sys

import nats


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--updates", type=int, default=0)
    ap.add_argument("--prefix", default="js-")
    ap.add_argument("--acked")
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--retry-seconds", type=float, default=0)
    ap.add_argument("--subject-prefix", default="tasks",
                    help="publish on PREFIX.created / PREFIX.updated (default tasks)")
    args = ap.parse_args()

    servers = args.server.split(",")
    conns = []
    for i in range(len(servers)):
        # Each connection prefers its own server, then the others in order.
        order = servers[i:] + servers[:i]
        conns.append(await nats.connect(servers=order, dont_randomize=True,
                                        max_reconnect_attempts=-1, reconnect_time_wait=0.2))
    streams = [c.jetstream(timeout=10) for c in conns]
    acked = open(args.acked, "w", buffering=1) if args.acked else None
    failed = 0
    gate = asyncio.Semaphore(args.in_flight)

    async def publish_task(i: int) -> None:
        nonlocal failed
        tid = f"{args.prefix}{i:06d}"
        events = [(f"{args.subject_prefix}.created", {"id": tid, "title": f"{tid} v1"})]
        events += [
            (f"{args.subject_prefix}.updated", {"id": tid, "title": f"{tid} v{k}"})
            for k in range(2, args.updates + 2)
        ]
        # One task's events go out one after another: their order is the test.
        async with gate:
            for n, (subject, body) in enumerate(events):
                js = streams[(i + n) % len(streams)]
                headers = {"Nats-Msg-Id": f"{tid}-{n + 1}"}
                deadline = asyncio.get_running_loop().time() + args.retry_seconds
                while True:
                    try:
                        await js.publish(subject, json.dumps(body).encode(), headers=headers)
                        break
                    except Exception as e:  # noqa: BLE001 - counted and reported
                        if asyncio.get_running_loop().time() < deadline:
                            await asyncio.sleep(0.2)
                            continue
                        failed += len(events) - n
                        print(f"publish {subject} {tid} failed: {e!r}", file=sys.stderr)
                        return
                if acked:
                    acked.write(f"{subject} {tid}\n")

    await asyncio.gather(*(publish_task(i) for i in range(args.tasks)))
    for c in conns:
        try:
            await c.drain()
        except nats.errors.ConnectionReconnectingError:
            # Its preferred server is the one that died: nothing of ours is pending on it
            # (every publish above was acknowledged or counted as failed).
            await c.close()
    total = args.tasks * (1 + args.updates)
    print(f"published {total - failed} of {total} events, acknowledged by the stream")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
