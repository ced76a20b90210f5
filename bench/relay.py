"""A TCP relay that adds network latency: 127.0.0.1:PORT -> UPSTREAM, RTT/2 each way.

tc/netem is not available in the lab, so both SSH clients (tunnelauth and OpenSSH) reach the
bastion through this relay. Each chunk is delivered RTT/2 after it arrived, in order, in each
direction. The TCP handshake the client made with the relay cost it nothing, so the upstream
connection is opened 1.5 RTT after the accept: the server then sees the connection, and the
client's first bytes, exactly when it would over a real link of that RTT (SYN, SYN-ACK, ACK +
data), and the server's first bytes reach the client at 2 RTT, as they would.

Standard library only. Every connection is logged on close as one JSON line
{"start": wall time, "rtt_ms", "events": [[seconds since accept, "c"|"s", bytes], ...]}
("c" = client to server), read by bench/run.py to count round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time

CHUNK = 65536


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _append(path: str, line: str) -> None:
    with open(path, "a") as handle:  # one short line per connection: blocking is fine
        handle.write(line + "\n")


class Relay:
    def __init__(self, upstream: tuple[str, int], rtt: float, log: str | None) -> None:
        self.upstream = upstream
        self.half = rtt / 2
        self.rtt = rtt
        self.log = log

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        start = time.time()
        ready_at = accepted + 1.5 * self.rtt
        events: list[list[object]] = []
        _nodelay(cwriter)
        to_server: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        to_client: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read(
            reader: asyncio.StreamReader,
            queue: asyncio.Queue[tuple[float, bytes]],
            tag: str,
            floor: float,
        ) -> None:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                now = loop.time()
                if data:
                    events.append([round(now - accepted, 6), tag, len(data)])
                queue.put_nowait((max(now + self.half, floor), data))
                if not data:
                    return

        async def deliver(
            queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
        ) -> None:
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    try:
                        writer.write_eof()
                    except OSError:
                        pass
                    return
                writer.write(data)
                try:
                    await writer.drain()
                except OSError:
                    return

        client_in = asyncio.create_task(read(creader, to_server, "c", ready_at))
        if ready_at > loop.time():
            await asyncio.sleep(ready_at - loop.time())
        try:
            sreader, swriter = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_in.cancel()
            cwriter.close()
            return
        _nodelay(swriter)
        tasks = [
            client_in,
            asyncio.create_task(read(sreader, to_client, "s", 0.0)),
            asyncio.create_task(deliver(to_server, swriter)),
            asyncio.create_task(deliver(to_client, cwriter)),
        ]
        try:
            # Done when both directions have delivered their EOF (or one side vanished).
            await asyncio.wait(tasks[2:], return_when=asyncio.ALL_COMPLETED)
        except asyncio.CancelledError:
            pass  # the relay is stopping
        finally:
            for task in tasks:
                task.cancel()
            for writer in (swriter, cwriter):
                writer.close()
            if self.log:
                _append(
                    self.log,
                    json.dumps({"start": start, "rtt_ms": self.rtt * 1000, "events": events}),
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="listen on 127.0.0.1:PORT (0: any)")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--log", help="append one JSON line per connection here")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    relay = Relay((host, int(port)), args.rtt_ms / 1000, args.log)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", args.port, reuse_address=True)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
