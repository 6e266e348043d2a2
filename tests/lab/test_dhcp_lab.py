"""`--addr dhcp` against dnsmasq in the lab: the stack leases an address on the server
side, answers UDP echo on it, and gives the lease back (DHCPRELEASE) when it stops."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from apps.labproc import ns_cmd
from tests.lab.stackproc import wait_logged

pytestmark = pytest.mark.lab

DNSMASQ = "/usr/sbin/dnsmasq"
ECHO = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for _ in range(5):
        s.sendto(b"dhcp lab", (sys.argv[1], 7))
        try:
            data, _addr = s.recvfrom(2048)
        except TimeoutError:
            continue
        print(data.decode())
        sys.exit(0)
    sys.exit(1)
""")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` (bounded): ``sig``, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _dnsmasq(lab, tmp_path) -> tuple[subprocess.Popen, object, object]:
    leases, log = tmp_path / "leases", tmp_path / "dnsmasq.log"
    leases.write_text("")
    argv = ns_cmd(lab.server_ns, DNSMASQ, "--no-daemon", "--conf-file=/dev/null",
                  "--no-resolv", "--no-hosts", "--port=0",
                  f"--interface={lab.server_tap}", "--bind-interfaces",
                  "--dhcp-range=198.19.0.50,198.19.0.60,255.255.255.0,2m",
                  "--dhcp-option=option:router,198.19.0.1",
                  "--dhcp-option=option:dns-server,198.19.0.1",
                  f"--dhcp-leasefile={leases}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
                  "--log-dhcp", f"--log-facility={log}")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return proc, leases, log


def test_dhcp_lease_echo_and_release(lab, tmp_path):
    dnsmasq, leases, dlog = _dnsmasq(lab, tmp_path)
    slog = tmp_path / "serve.log"
    stack = None
    try:
        time.sleep(0.5)     # dnsmasq binds port 67 (bounded: it fails fast or runs)
        assert dnsmasq.poll() is None, dlog.read_text() if dlog.exists() else "dnsmasq exited"
        stack = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "serve", "--tap", lab.server_tap,
             "--netns", lab.server_ns, "--addr", "dhcp", "--no-offload"],
            stdout=open(slog, "wb"), stderr=subprocess.STDOUT)
        wait_logged(stack, slog, " bound ", timeout=30)
        m = re.search(r"dhcp: \S+ bound (198\.19\.0\.\d+)/24 router 198\.19\.0\.1 "
                      r"dns 198\.19\.0\.1 lease (\d+)s", slog.read_text())
        assert m, slog.read_text()
        addr = m.group(1)
        assert addr in leases.read_text()
        echo = subprocess.run(ns_cmd(lab.server_ns, sys.executable, "-c", ECHO, addr),
                              capture_output=True, text=True, timeout=30)
        assert echo.returncode == 0 and echo.stdout.strip() == "dhcp lab", (
            echo.stderr + slog.read_text())
        _stop(stack)
        assert stack.returncode == 0, slog.read_text()
        deadline = time.monotonic() + 10
        while "DHCPRELEASE" not in dlog.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)   # poll interval: dnsmasq logs asynchronously
        assert "DHCPRELEASE" in dlog.read_text(), dlog.read_text() + slog.read_text()
        assert addr not in leases.read_text()
    finally:
        if stack is not None:
            _stop(stack, signal.SIGKILL)
        _stop(dnsmasq)
