"""The stack's TCP against the Linux kernel's, in the lab: services, connecting out,
faults on both sides, and kernels with timestamps, SACK or window scaling off."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import pytest

from apps.labproc import ns_cmd
from apps.services import CHARGEN_BLOCK
from tests.lab.stackproc import StackProcess, kernel_drops, kernel_loss

pytestmark = pytest.mark.lab

CLIENT = textwrap.dedent("""
    import hashlib, socket, sys, threading
    mode, size = sys.argv[1], int(sys.argv[2])
    port = {"echo": 7, "discard": 9, "chargen": 19}[mode]
    s = socket.create_connection(("198.18.0.2", port), timeout=30)
    s.settimeout(120)
    block = hashlib.sha256(b"seed").digest() * 2048   # 64 KiB, deterministic
    if mode == "chargen":
        got = bytearray()
        while len(got) < size:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
        s.close()
        print(len(got), hashlib.sha256(bytes(got[:size])).hexdigest())
        sys.exit(0)
    sent = hashlib.sha256()
    def send():
        left = size
        while left:
            chunk = block[:min(left, len(block))]
            s.sendall(chunk)
            sent.update(chunk)
            left -= len(chunk)
        s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send)
    t.start()
    got = hashlib.sha256()
    n = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        got.update(b)
        n += len(b)
    t.join()
    s.close()
    print(n, got.hexdigest(), sent.hexdigest())
""")


def client(ns: str, mode: str, size: int, timeout: float = 240) -> list[str]:
    proc = subprocess.run(ns_cmd(ns, sys.executable, "-c", CLIENT, mode, str(size)),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def sysctl(ns: str, key: str, value: int) -> None:
    subprocess.run(ns_cmd(ns, "sysctl", "-qw", f"{key}={value}"), check=True, timeout=10)


@pytest.fixture
def served(lab, tmp_path):
    stack = StackProcess(lab, "serve", log=tmp_path / "serve.log")
    stack.wait_ready()
    yield stack
    summary = stack.stop()
    assert summary["tcp"].get("tcp_bad_checksum", 0) == 0


def test_echo_discard_chargen_with_kernel_clients(lab, served):
    n, got, sent = client(lab.client_ns, "echo", 8 << 20)
    assert int(n) == 8 << 20 and got == sent
    n, _got, _sent = client(lab.client_ns, "discard", 32 << 20)
    assert int(n) == 0  # discard sends nothing back, and closes after our FIN
    size = 4 << 20
    n, digest = client(lab.client_ns, "chargen", size)
    expected = (CHARGEN_BLOCK * (size // len(CHARGEN_BLOCK) + 1))[:size]
    assert int(n) >= size and digest == hashlib.sha256(expected).hexdigest()


def test_connect_out_to_a_kernel_server(lab, tmp_path):
    server = subprocess.Popen(ns_cmd(lab.server_ns, sys.executable, "-c", textwrap.dedent("""
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("198.19.0.1", 5000)); s.listen(); s.settimeout(30)
        c, _ = s.accept(); c.settimeout(30); data = b""
        while (b := c.recv(65536)):
            data += b
        c.sendall(data[::-1]); c.close()
    """)))
    try:
        argv = [sys.executable, "-m", "apps.cli", "connect", "198.19.0.1", "5000", "--lab",
                "--client-ns", lab.client_ns, "--client-tap", lab.client_tap,
                "--server-ns", lab.server_ns, "--server-tap", lab.server_tap,
                "--log-level", "warning"]
        payload = bytes(range(256)) * 1000
        out = subprocess.run(argv, input=payload, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == payload[::-1]
    finally:
        server.kill()
        server.wait(timeout=10)


def test_echo_100mb_through_faults_on_both_sides(lab, tmp_path):
    size = 100 << 20
    kernel_loss(lab.client_ns, 10)
    stack = StackProcess(lab, "serve", "--impair", "loss=1%,duplicate=1%,reorder=2%,"
                         "corrupt=0.1%,delay=1ms", "--seed", "3", log=tmp_path / "f.log")
    try:
        stack.wait_ready()
        n, got, sent = client(lab.client_ns, "echo", size, timeout=600)
        assert int(n) == size and got == sent
        assert kernel_drops(lab.client_ns) > 0  # the faults really happened
    finally:
        kernel_loss(lab.client_ns, None)
        summary = stack.stop()
    assert summary["tcp"].get("retransmits", 0) > 0


@pytest.mark.parametrize("key", ["net.ipv4.tcp_timestamps", "net.ipv4.tcp_sack",
                                 "net.ipv4.tcp_window_scaling"])
def test_kernel_without_an_option_interoperates(lab, served, key):
    sysctl(lab.client_ns, key, 0)
    n, got, sent = client(lab.client_ns, "echo", 4 << 20)
    assert int(n) == 4 << 20 and got == sent
