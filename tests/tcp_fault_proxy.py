#!/usr/bin/env python3
"""A TCP proxy that injects network faults into the connections through it: tests/e2e-chaos.sh
puts one between each app instance and nats-server.

  tcp_fault_proxy.py --listen PORT --to HOST:PORT

Signals:
  SIGUSR1  stall: stop moving bytes in both directions; the connections stay open, so neither
           side sees anything but silence (a stalled network path, a VM on a paused host);
           SIGUSR1 again lets the held bytes through.
  SIGUSR2  cut: abort every open connection (both sides get a reset); new ones are accepted, so
           a client that reconnects gets through.
Each fault is logged with the number of connections it hit.
"""
import argparse
import asyncio
import signal
import sys
import time


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.open: set = set()

    def log(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    async def pump(self, reader, writer) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def serve(self, client_reader, client_writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, up_writer)
        self.open.add(pair)
        try:
            await asyncio.gather(self.pump(client_reader, up_writer),
                                 self.pump(up_reader, client_writer))
        finally:
            self.open.discard(pair)

    def stall(self) -> None:
        if self.flowing.is_set():
            self.flowing.clear()
            self.log(f"stall: {len(self.open)} connections held")
        else:
            self.flowing.set()
            self.log(f"flowing again: {len(self.open)} connections")

    def cut(self) -> None:
        self.log(f"cut: {len(self.open)} connections aborted")
        for pair in list(self.open):
            for w in pair:
                w.transport.abort()
        self.open.clear()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--to", required=True, help="HOST:PORT")
    args = ap.parse_args()
    host, port = args.to.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.stall)
    loop.add_signal_handler(signal.SIGUSR2, proxy.cut)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", args.listen)
    proxy.log(f"listening on 127.0.0.1:{args.listen}, to {args.to}")
    async with server:
        await stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
