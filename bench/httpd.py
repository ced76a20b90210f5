"""A tiny HTTP server for the callback benchmark: every request gets a 2 KB 200 and a close.

Runs on the lab target's 127.0.0.1 as the lab user, with the system python3 (stdlib only).
It answers like hermes's callback listener (one request per connection, then close), but
never shuts down, so both forwards can be measured against it in turn.
"""

import socket
import sys
import threading

BODY = b"x" * 2048


def serve(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(BODY), BODY)
        )


def main() -> None:
    port = int(sys.argv[1])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    print("listening", port, flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
