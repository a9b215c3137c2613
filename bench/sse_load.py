#!/usr/bin/env python3
"""Change-stream load: CLIENTS Server-Sent Events clients on GET /api/events (raw asyncio
HTTP/1.1, one connection each), then tasks.created published to JetStream (PyPI nats-py) at
RATE per second for SECONDS. Per event: the time from its publish until the last client
received it; per delivery: publish to that client. Prints one JSON object.

  sse_load.py --base http://127.0.0.1:PORT --nats URL --clients 200 --rate 100 --seconds 20
              [--update-from K] [--ready FILE]

Each event is a tasks.updated of a seeded task (`t-%05d`, from K on, each once), so the
task set, and with it the cost of a listing, stays the same from run to run.

--ready FILE is written once every client is connected (the caller starts its load then).
"""
import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.parse

import nats


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def client(host, port, received, ready):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream answered {status!r}")
    chunked = False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
            chunked = True
    ready.set()
    buf = b""
    while True:
        if chunked:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size)
            await reader.readline()
        else:
            data = await reader.read(65536)
            if not data:
                return
        now = time.monotonic()
        buf += data
        # The task id without parsing the JSON (the clients share a core with the app
        # and wrk): data is {"seq":…,"kind":"…","id":"<id>",…}, ids have no quotes.
        *frames, buf = buf.split(b"\n\n")
        for frame in frames:
            at = frame.find(b'"id":"')
            if at >= 0:
                end = frame.index(b'"', at + 6)
                received.setdefault(frame[at + 6 : end].decode(), []).append(now)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--update-from", type=int, default=0)
    ap.add_argument("--ready")
    args = ap.parse_args()
    url = urllib.parse.urlsplit(args.base)
    received = {}
    readies = [asyncio.Event() for _ in range(args.clients)]
    tasks = [asyncio.create_task(client(url.hostname, url.port, received, r)) for r in readies]
    t0 = time.monotonic()
    for r in readies:
        await asyncio.wait_for(r.wait(), timeout=60)
    connect_s = time.monotonic() - t0
    if args.ready:
        open(args.ready, "w").write("ready\n")
    nc = await nats.connect(args.nats)
    js = nc.jetstream(timeout=10)
    sent = {}
    n = int(args.rate * args.seconds)
    start = time.monotonic()
    for i in range(n):
        due = start + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tid = f"t-{args.update_from + i:05d}"
        sent[tid] = time.monotonic()
        await js.publish("tasks.updated", json.dumps({"id": tid, "title": f"updated {tid}"}).encode())
    publish_s = time.monotonic() - start
    # Stragglers.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and args.clients:
        if all(len(received.get(t, [])) >= args.clients for t in sent):
            break
        await asyncio.sleep(0.1)
    await nc.close()
    for t in tasks:
        t.cancel()
    to_all, per_delivery, missing = [], [], 0
    for tid, at in sent.items():
        got = received.get(tid, [])
        missing += max(0, args.clients - len(got))
        per_delivery += [g - at for g in got]
        if args.clients and len(got) >= args.clients:
            to_all.append(max(got) - at)
    ms = lambda v: None if v is None else round(v * 1000, 1)
    print(json.dumps({
        "clients": args.clients, "events": n, "rate": round(n / publish_s, 1),
        "connect_all_s": round(connect_s, 2),
        "to_every_client_ms": {"p50": ms(pct(to_all, 50)), "p99": ms(pct(to_all, 99)), "max": ms(max(to_all) if to_all else None)},
        "per_delivery_ms": {"p50": ms(pct(per_delivery, 50)), "p99": ms(pct(per_delivery, 99))},
        "missing_deliveries": missing,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
