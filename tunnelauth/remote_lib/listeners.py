# Listening TCP sockets, from the kernel's tables (no `ss` or `netstat` to start). Runs on the
# target, in front of agent.py and the doctor's probe (remote._python, libs=("listeners",)), and
# here, on a table that `cat` fetched. Standard library only, Python 3.6+ (so the annotations
# are strings: never evaluated there).

TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
# Where a listener keeps hermes from binding 127.0.0.1:<port> (a wildcard one too; ::1 because
# a browser may resolve "localhost" there).
LOOPBACK_OR_ANY = frozenset(
    ("127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0")
)
_LISTEN = "0A"
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def read_tcp_tables() -> "str":
    """The text of /proc/net/tcp and tcp6; '' for a table that cannot be read."""
    text = []
    for name in TCP_TABLES:
        try:
            with open(name) as table:
                text.append(table.read())
        except OSError:
            pass
    return "".join(text)


def tcp_listeners(text: "str", port: "int | None" = None) -> "dict[int, set[str]]":
    """{port: local addresses LISTENing on it} from /proc/net/tcp{,6} text; only `port` when
    given. /proc prints addresses as raw 32-bit words, so a big-endian kernel's read
    differently: of the two readings, a loopback or wildcard one wins."""
    want = None if port is None else f":{port:04X}"
    found: "dict[int, set[str]]" = {}
    for row in text.splitlines():
        cols = row.split()
        if len(cols) < 4 or cols[3] != _LISTEN or (want and not cols[1].upper().endswith(want)):
            continue
        hexaddr, _, hexport = cols[1].partition(":")
        try:
            number = int(hexport, 16)
            raw = bytes.fromhex(hexaddr)
        except ValueError:
            continue  # the header line, or something this parser does not know
        if len(raw) not in (4, 16):
            continue
        address = _tcp_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
        if address not in LOOPBACK_OR_ANY:
            big_endian = _tcp_address(raw)
            if big_endian in LOOPBACK_OR_ANY:
                address = big_endian
        found.setdefault(number, set()).add(address)
    return found


def _tcp_address(packed: "bytes") -> "str":
    """One spelling on every Python: 127.0.0.1, ::1, ::ffff:127.0.0.1."""
    if len(packed) == 4:
        return ".".join(str(byte) for byte in bytearray(packed))
    if packed[:12] == _V4_MAPPED:
        return "::ffff:" + _tcp_address(packed[12:])
    if packed[:15] == b"\0" * 15 and packed[15] in (0, 1):
        return "::" if packed[15] == 0 else "::1"
    import socket  # only for other IPv6 addresses: the supervisor's start does not pay for it

    return socket.inet_ntop(socket.AF_INET6, packed)
