#!/usr/bin/env python3
"""Hostile requests to the read side, one per finding of its security review, each timed on
a fresh connection with the standard library only (no client of ours): what each must be
answered with (4xx, never 5xx, never a dropped connection) and how long it took; then 300
change-stream connections opened at once and dropped, and whether the app still serves.
Signatures are made here with Python's hmac (an implementation independent of
crates/signing).

  hostile.py --base http://127.0.0.1:PORT --hmac-key KEY

Prints one line per request: name, TAB, expected status, TAB, status got (0: no answer),
TAB, milliseconds. tests/e2e-live.sh checks each line.
"""
import argparse
import hashlib
import hmac
import socket
import time
import urllib.parse


def exchange(host: str, port: int, head: bytes, body_chunks=(), timeout: float = 5.0):
    """Sends a request head (and as much of the body as the server takes before it answers),
    returns (status, milliseconds to the status line); status 0 when no answer came."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head)
        s.setblocking(False)
        got = b""
        chunks = iter(body_chunks)
        pending = next(chunks, None)
        while time.monotonic() - started < timeout:
            try:
                data = s.recv(4096)
                if not data:
                    break
                got += data
                if b"\r\n" in got:
                    break
                continue
            except BlockingIOError:
                pass
            if pending is not None:
                try:
                    sent = s.send(pending)
                    pending = pending[sent:] or next(chunks, None)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    pass
            else:
                time.sleep(0.001)
        took = (time.monotonic() - started) * 1000
    line = got.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = line.split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, took


def request(method: str, target: str, headers=None, body: bytes = b"", host_header: str = "x"):
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed(key: bytes, method: str, path: str, body: bytes, at: int) -> dict:
    digest = hashlib.sha256(body).hexdigest()
    text = f"{at}\n{method}\n{path}\n{digest}".encode()
    return {"X-Timestamp": str(at), "X-Signature": hmac.new(key, text, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--hmac-key", required=True)
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.base)
    host, port = url.hostname, url.port
    key = args.hmac_key.encode()
    now = int(time.time())
    purge = b'{"all":true}'
    once = signed(key, "POST", "/api/cache/purge", purge, now)

    def chunked(total: int):
        block = b"x" * 65536
        piece = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        for _ in range(total // len(block)):
            yield piece

    cases = [
        # 1. bodies: read only by the routes that take one, and at most 64 KiB of it
        ("a 200 MB chunked body to a route that takes none", 404,
         request("POST", "/x", {"Transfer-Encoding": "chunked"}), chunked(200 * 1024 * 1024)),
        ("a 200 MB chunked body to the purge", 413,
         request("POST", "/api/cache/purge", {"Transfer-Encoding": "chunked"}), chunked(200 * 1024 * 1024)),
        ("a purge declaring 1 GB", 413,
         request("POST", "/api/cache/purge", {"Content-Length": str(1 << 30)}), ()),
        # 2. ids that would forge log lines, or run the length of the URL
        ("an id with a line break", 400, request("GET", "/api/tasks/x%0A%5Bforged%5D%20OK"), ()),
        ("an id with a terminal escape", 400, request("GET", "/tasks/x%1B%5B2J"), ()),
        ("an id of 4,000 characters", 400, request("GET", "/api/tasks/" + "a" * 4000), ()),
        ("a fragment id with a line break", 400, request("GET", "/fragments/row/x%0Ay"), ()),
        # 3, 4. signatures: unsigned, another route's, too far ahead, the same one twice
        ("an unsigned purge", 401, request("POST", "/api/cache/purge", body=purge), ()),
        ("a purge signed for another path", 401,
         request("POST", "/api/cache/purge",
                 signed(key, "POST", "/api/dead-letters/x/replay", purge, now), purge), ()),
        ("a purge signed 60 s ahead", 401,
         request("POST", "/api/cache/purge", signed(key, "POST", "/api/cache/purge", purge, now + 60), purge), ()),
        ("a signed purge", 200, request("POST", "/api/cache/purge", once, purge), ()),
        ("the same signed purge again", 409, request("POST", "/api/cache/purge", once, purge), ()),
        ("a replay with a forged id (refused before its signature is read)", 400,
         request("POST", "/api/dead-letters/x%0Ay/replay"), ()),
        # 7, 8. scans and streams: bad cursors and Last-Event-IDs are refused, not walked
        ("a cursor that is not one", 400, request("GET", "/api/tasks?status=completed&cursor=%00%00"), ()),
        ("a limit past the maximum", 400, request("GET", "/api/tasks?limit=100000"), ()),
        ("a Last-Event-ID that is not a number", 400, request("GET", "/api/events", {"Last-Event-ID": "-1"}), ()),
        ("a Last-Event-ID of 20 digits", 400,
         request("GET", "/api/events", {"Last-Event-ID": "9" * 20}), ()),
        # operator reads without the token
        ("metrics without the admin token", 401, request("GET", "/metrics"), ()),
        ("dead letters with a wrong token", 401,
         request("GET", "/api/dead-letters", {"Authorization": "Bearer " + "a" * 64}), ()),
        ("a method the route does not take", 405, request("DELETE", "/api/tasks"), ()),
    ]
    for name, want, head, body in cases:
        status, took = exchange(host, port, head, body)
        print(f"{name}\t{want}\t{status}\t{took:.0f}")

    # 300 change streams opened at once, then dropped without a word.
    socks = []
    started = time.monotonic()
    for _ in range(300):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(request("GET", "/api/events"))
            socks.append(s)
        except OSError:
            break
    opened = 0
    for s in socks[:20]:
        try:
            s.settimeout(5)
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                opened += 1
        except OSError:
            pass
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        s.close()
    print(f"300 streams opened at once (the first 20 answered 200: {opened})\t20\t{opened}\t"
          f"{(time.monotonic() - started) * 1000:.0f}")
    time.sleep(1)
    status, took = exchange(host, port, request("GET", "/health"))
    print(f"health after the 300 streams were dropped\t200\t{status}\t{took:.0f}")
    status, took = exchange(host, port, request("GET", "/api/events"))
    print(f"a new stream after them\t200\t{status}\t{took:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
