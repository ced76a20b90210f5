"""The callback benchmark's two halves. Runs in the lab's laptop netns.

    forward.py hold CONFIG TARGET PORT      tunnelauth's forward, and nothing else: ssh.plan +
                                            ssh.connect (hop by hop, as a login does) and
                                            forward.Forward on 127.0.0.1:PORT -> target's
                                            127.0.0.1:PORT. Prints "ready", holds until stdin
                                            closes.
    forward.py client N PORT...             N rounds; in each round one request through each
                                            PORT, the order alternating between rounds. A
                                            request is what a browser's callback is: a new TCP
                                            connection (TCP_NODELAY), a 2 KB GET, the 2 KB
                                            answer read to the server's close. Prints
                                            {"PORT": [seconds, ...], ...}.

Driving tunnelauth.forward.Forward directly (rather than timing a whole login) measures the
forward alone, against the very same HTTP server and hop as `ssh -L`, and lets the two be
interleaved request by request, so both see the same machine noise.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

REQUEST_SIZE = 2048


def request(port: int) -> bytes:
    head = (
        f"GET /callback?code=%s&state=0123456789abcdef HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: tunnelauth-bench\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    pad = REQUEST_SIZE - len(head % "")
    return (head % ("c" * pad)).encode()


def once(port: int, payload: bytes) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(payload)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    elapsed = time.perf_counter() - start
    if not got.startswith(b"HTTP/1.1 200") or len(got) < 2048:
        raise RuntimeError(f"bad answer through port {port}: {got[:80]!r}")
    return elapsed


def client(rounds: int, ports: list[int]) -> None:
    payloads = {port: request(port) for port in ports}
    for port in ports:  # warm-up: first channel, first page faults
        for _ in range(3):
            once(port, payloads[port])
    times: dict[int, list[float]] = {port: [] for port in ports}
    for i in range(rounds):
        for port in ports if i % 2 == 0 else list(reversed(ports)):
            times[port].append(once(port, payloads[port]))
    print(json.dumps({str(port): values for port, values in times.items()}))


async def hold(config: str, target: str, port: int) -> None:
    from tunnelauth import destination, ssh
    from tunnelauth.forward import Forward

    settings = destination.SshSettings(config_file=Path(config))
    hops = ssh.plan(destination.parse_endpoint(target), None, settings)
    errors: list[str] = []
    async with AsyncExitStack() as stack:
        chain = await ssh.connect(hops, stack)
        forward = Forward(
            ssh.AsyncsshConnection(chain), port, lambda p, exc: errors.append(f"{p}: {exc.message}")
        )
        await forward.start()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
        await forward.close()
    if errors:
        print("errors: " + "; ".join(errors), file=sys.stderr)


def main() -> int:
    if sys.argv[1] == "hold":
        asyncio.run(hold(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        client(int(sys.argv[2]), [int(p) for p in sys.argv[3:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
