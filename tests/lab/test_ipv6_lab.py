"""IPv6 in the lab against the Linux kernel: ping6 to the stack from both sides and
through its router, curl -6 through `tapsplice router --lab` for a large file
(sha256 checked), and a kernel TCP and UDP client to `tapsplice serve --lab`'s echo
over IPv6."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from apps.labproc import ns_cmd, wait_until
from apps.origin import Origin
from tests.lab.stackproc import StackProcess

pytestmark = pytest.mark.lab

STACK_C, STACK_S = "2001:2:0:1::2", "2001:2:0:2::2"
CLIENT, SERVER = "2001:2:0:1::1", "2001:2:0:2::1"


def ping6(ns: str, addr: str, count: int = 2, size: int = 56) -> subprocess.CompletedProcess:
    return subprocess.run(ns_cmd(ns, "ping", "-6", "-c", str(count), "-i", "0.2", "-W", "1",
                                 "-s", str(size), addr),
                          capture_output=True, text=True, timeout=30)


def _wait_ipv6(stack: StackProcess, lab) -> None:
    """The stack's IPv6 addresses are usable once DAD passed (about a second)."""
    stack.wait_ready()
    ok = wait_until(ns_cmd(lab.client_ns, "ping", "-6", "-c", "1", "-W", "1", STACK_C),
                    timeout=20)
    assert ok, stack.log.read_text()


def test_router_ping6_and_curl6_through_it(lab, tmp_path):
    stack = StackProcess(lab, "router", log=tmp_path / "router6.log")
    try:
        _wait_ipv6(stack, lab)
        assert ping6(lab.server_ns, STACK_S).returncode == 0
        routed = ping6(lab.client_ns, SERVER)
        assert routed.returncode == 0 and "ttl=63" in routed.stdout, routed.stdout
        back = ping6(lab.server_ns, CLIENT)
        assert back.returncode == 0, back.stdout
        big = ping6(lab.client_ns, STACK_C, size=3000)      # answered in fragments
        assert big.returncode == 0, big.stdout
        with Origin(lab.server_ns, addr="[::]") as origin:
            f = origin.make_file("r6.bin", 8 << 20, random=True)
            out = tmp_path / "r6.bin"
            url = origin.url(f, f"[{SERVER}]")
            subprocess.run(ns_cmd(lab.client_ns, "curl", "-6", "-g", "-sS", "--fail",
                                  "--noproxy", "*", "--max-time", "60", "-o", str(out), url),
                           check=True, timeout=70)
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    finally:
        summary = stack.stop()
    c = summary["stack"]
    assert c["rx_forwarded"] > 100
    assert c["rx_frames"] == c["rx_arp"] + c["rx_local"] + c["rx_forwarded"] + c["rx_dropped"]
    assert summary["devices"][lab.server_tap]["rx_bytes"] > f.size


_ECHO_CLIENT = """
import socket, sys
data = bytes(range(256)) * 4096
s = socket.create_connection((sys.argv[1], 7), timeout=10)
peer = s.getpeername()[0]
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := s.recv(65536):
    got += chunk
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"ping6", (sys.argv[1], 7))
answer, src = u.recvfrom(100)
print(peer, len(got), got == data, answer.decode(), src[0])
"""


def test_kernel_tcp_client_to_serve_echo_over_ipv6(lab, tmp_path):
    stack = StackProcess(lab, "serve", log=tmp_path / "serve6.log")
    try:
        _wait_ipv6(stack, lab)
        out = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", _ECHO_CLIENT, STACK_C),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [STACK_C, str(256 * 4096), "True", "ping6", STACK_C]
    finally:
        stack.stop()
