#!/usr/bin/env python3
"""A Server-Sent Events client on the standard library (http.client): connects to URL,
optionally resuming with a Last-Event-ID header, and writes one JSON line per event
({"id", "event", "data"}) to --out until it has --count events of the given kinds, or
--timeout seconds pass. Exits 1 on timeout, 2 on a non-200 answer.

  sse_client.py --url URL [--last-event-id N] --count N [--kinds created,updated]
                [--timeout S] --out FILE

Framing as the HTML standard's EventSource parses it: fields split at the first colon, one
optional space dropped, `data` lines joined with newlines, comments (lines starting with
a colon) ignored, an event dispatched at a blank line.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse


def events(resp):
    fields = {"data": []}
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if fields["data"] or "event" in fields:
                yield {
                    "id": fields.get("id"),
                    "event": fields.get("event", "message"),
                    "data": "\n".join(fields["data"]),
                }
            fields = {"data": []}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            fields["data"].append(value)
        elif name in ("id", "event", "retry"):
            fields[name] = value


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--last-event-id")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--kinds", default="created,updated,deleted,reset")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    kinds = set(args.kinds.split(","))
    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
    headers = {"Accept": "text/event-stream"}
    if args.last_event_id:
        headers["Last-Event-ID"] = args.last_event_id
    path = url.path + ("?" + url.query if url.query else "")
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        print(f"answered {resp.status}: {resp.read()[:300]!r}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    got = 0
    with open(args.out, "w", buffering=1) as out:
        try:
            for ev in events(resp):
                if ev["event"] in kinds:
                    out.write(json.dumps(ev) + "\n")
                    got += 1
                if got >= args.count or time.monotonic() > deadline:
                    break
        except TimeoutError:
            pass
    conn.close()
    if got < args.count:
        print(f"timed out with {got} of {args.count} events", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
