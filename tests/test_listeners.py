"""The one reader of the kernel's listener tables (remote_lib/listeners.py), used by the
supervisor and the doctor's probe on the target and by the doctor here."""

from __future__ import annotations

import socket
import subprocess
import sys

from tunnelauth import remote
from tunnelauth.remote_lib.listeners import read_tcp_tables, tcp_listeners

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:AB53 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:DB19 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 020212C6:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:2710 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000000000000:2711 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 0000000000000000FFFF00000100007F:2712 00000000000000000000000000000000:0000 0A 00000000:00000000
   3: 000080FE00000000FF005450B6AD1DFE:2713 00000000000000000000000000000000:0000 0A 00000000:00000000
   4: 00000000000000000000000001000000:AB53 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_every_listen_row_of_both_tables_with_its_address() -> None:
    assert tcp_listeners(TCP + TCP6) == {
        43859: {"127.0.0.1", "::1"},
        56089: {"0.0.0.0"},
        22: {"198.18.2.2"},
        10000: {"::1"},
        10001: {"::"},
        10002: {"::ffff:127.0.0.1"},
        10003: {"fe80::5054:ff:fe1d:adb6"},
    }  # 127.0.0.1:8080 is a connection (state 01), not a listener


def test_one_port_only_when_asked() -> None:
    assert tcp_listeners(TCP + TCP6, 43859) == {43859: {"127.0.0.1", "::1"}}
    assert tcp_listeners(TCP + TCP6, 8080) == {}


def test_a_big_endian_kernel_reads_as_loopback_too() -> None:
    assert tcp_listeners("   0: 7F000001:A8F3 00000000:0000 0A 0\n") == {43251: {"127.0.0.1"}}


def test_nothing_from_nothing_or_garbage() -> None:
    assert tcp_listeners("") == {}
    assert tcp_listeners("garbage\n 0: zz:qq x 0A\n 1: 0100:0016 0 0A\n") == {}


def test_the_live_tables_show_a_socket_listening_here() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert tcp_listeners(read_tcp_tables(), port) == {port: {"127.0.0.1"}}


def test_the_library_travels_in_front_of_a_remote_script_on_python_3_6_syntax() -> None:
    script = b"import sys\nprint(sorted(tcp_listeners(sys.stdin.read())[43859]))\n"
    command = remote._python(script, libs=("listeners",))
    done = subprocess.run(
        ["sh", "-c", command],
        input=TCP + TCP6,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == "['127.0.0.1', '::1']\n"
    assert remote._python(script, libs=("listeners",)) == command  # packed once
    assert remote._pack.cache_info().hits >= 1
    assert sys.version_info >= (3, 6)
