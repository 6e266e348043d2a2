"""Hostile packets and vanished peers against the SOCKS proxy, between real Linux TCP
stacks: spoofed RSTs and SYNs injected into a live spliced download, a client that
vanishes (idle timeout, spliced and copied), and SIGTERM with downloads running."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from apps.labproc import ns_cmd
from apps.origin import Origin
from tests.lab.stackproc import StackProcess, nft_load, nft_packets

pytestmark = pytest.mark.lab

# Run in the client namespace: wait for the live flow to the proxy (the client's own
# ACKs show its sequence number, which is what the server expects next), then inject,
# from the client's address and port: a RST in the server's window but not exact, a
# RST half the sequence space away, and a SYN.
INJECT = textwrap.dedent("""
    import socket, sys, time
    import dpkt
    tap = sys.argv[1]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    s.bind((tap, 0))
    s.settimeout(1.0)
    seen, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            frame, addr = s.recvfrom(1 << 17)
        except socket.timeout:
            continue
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        if addr[2] == socket.PACKET_OUTGOING and tcp.dport == 1080 and not tcp.data \\
                and tcp.flags == dpkt.tcp.TH_ACK:
            seen += 1
            if seen >= 3:  # into the download
                break
    else:
        sys.exit(f"no flow seen ({seen} ACKs)")
    def send(flags, seq):
        t = dpkt.tcp.TCP(sport=tcp.sport, dport=1080, seq=seq % 2**32, ack=0, flags=flags,
                         win=0 if flags & dpkt.tcp.TH_RST else 65535)
        i = dpkt.ip.IP(src=ip.src, dst=ip.dst, p=6, ttl=64, data=t)
        s.send(bytes(dpkt.ethernet.Ethernet(src=eth.src, dst=eth.dst, type=0x0800, data=i)))
    for _ in range(3):
        send(dpkt.tcp.TH_RST, tcp.seq + 2**31)
        send(dpkt.tcp.TH_RST, tcp.seq + 1000)
        send(dpkt.tcp.TH_SYN, tcp.seq + 123456)
        time.sleep(0.2)
    print("injected", tcp.sport, flush=True)
""")

# Run in the server namespace: one connection on port 7010 is echoed; how it ended is
# printed ("reset" or "eof").
WATCHER = textwrap.dedent("""
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("198.19.0.1", 7010)); s.listen(8)
    print("listening", flush=True)
    c, _ = s.accept()
    try:
        while (b := c.recv(65536)):
            c.sendall(b)
        print("eof", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
""")

# Run in the client namespace: a SOCKS5 CONNECT to 198.19.0.1:7010, one echo, then
# silence; prints the local port and stays until killed.
QUIET_CLIENT = textwrap.dedent("""
    import socket, struct, sys, time
    c = socket.create_connection(("198.18.0.2", 1080), timeout=10)
    c.sendall(b"\\x05\\x01\\x00"); assert c.recv(2) == b"\\x05\\x00"
    c.sendall(b"\\x05\\x01\\x00\\x01" + socket.inet_aton("198.19.0.1") + struct.pack("!H", 7010))
    rep = c.recv(10); assert rep[1] == 0, rep
    c.sendall(b"hello"); assert c.recv(5) == b"hello"
    print(c.getsockname()[1], flush=True)
    time.sleep(120)
""")

# Run in the client namespace: one SOCKS5 echo through 198.19.0.1:7000 (the kernel
# server of test_splice_lab); exits 0 if it worked.
ECHO_ONCE = textwrap.dedent("""
    import socket, struct
    c = socket.create_connection(("198.18.0.2", 1080), timeout=5)
    c.settimeout(5)
    c.sendall(b"\\x05\\x01\\x00"); assert c.recv(2) == b"\\x05\\x00"
    c.sendall(b"\\x05\\x01\\x00\\x01" + socket.inet_aton("198.19.0.1") + struct.pack("!H", 7010))
    rep = c.recv(10); assert rep[1] == 0, rep
""")


def _curl(lab, origin: Origin, f, out, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(ns_cmd(lab.client_ns, "curl", "-sS", "--fail", "--socks5",
                                   "198.18.0.2:1080", "-o", str(out), *extra,
                                   origin.url(f, "198.19.0.1")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_spoofed_rsts_and_syns_do_not_end_a_live_spliced_download(lab, tmp_path):
    stack = StackProcess(lab, "socks", "--mode", "splice", log=tmp_path / "socks.log")
    stack.wait_ready()
    try:
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("d.bin", 24 << 20, random=True)
            out = tmp_path / "d.bin"
            curl = _curl(lab, origin, f, out, "--limit-rate", "3M")
            inject = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", INJECT,
                                           lab.client_tap),
                                    capture_output=True, text=True, timeout=60)
            assert inject.returncode == 0 and "injected" in inject.stdout, inject.stderr
            _stdout, err = curl.communicate(timeout=60)
            assert curl.returncode == 0, err
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    finally:
        summary = stack.stop()
    sp, tcp = summary["splice"], summary["tcp"]
    assert sp["splices"] == 1 and not sp.get("drain_reset")
    access = [line for line in (tmp_path / "socks.log").read_text().splitlines()
              if "dest=198.19.0.1:80" in line]
    assert len(access) == 1 and access[0].endswith(" spliced"), access
    assert sp["rst_drop"] == 3 and sp["rst_challenge"] == 3 and sp["syn_challenge"] == 3
    assert tcp["splice_challenge_ack"] == 6


def _watch(lab) -> subprocess.Popen:
    proc = subprocess.Popen(ns_cmd(lab.server_ns, sys.executable, "-c", WATCHER),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def _vanish(ns: str, port: int) -> None:
    """The client at ``port`` goes silent: nothing in or out (RSTs to it counted)."""
    ruleset = ("table inet tsvanish {\n"
               f"  chain out {{ type filter hook output priority 0; tcp sport {port} drop; }}\n"
               f"  chain in {{ type filter hook input priority 0; tcp dport {port} "
               "tcp flags rst counter drop; tcp dport " f"{port} drop; }}\n}}\n")
    nft_load(ns, ruleset)


def _rsts_to_vanished(ns: str) -> int:
    return nft_packets(ns, "tsvanish")


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_a_vanished_client_is_reset_after_the_idle_timeout_and_frees_its_slot(
        lab, tmp_path, mode):
    stack = StackProcess(lab, "socks", "--mode", mode, "--idle-timeout", "2",
                         "--max-connections", "1", log=tmp_path / "socks.log")
    stack.wait_ready()
    watcher = _watch(lab)
    quiet = subprocess.Popen(ns_cmd(lab.client_ns, sys.executable, "-c", QUIET_CLIENT),
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(quiet.stdout.readline())
        _vanish(lab.client_ns, port)
        t0 = time.monotonic()
        # While the silent session holds the only slot, a new client is turned away.
        second = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", ECHO_ONCE),
                                capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        # The server end gets its RST once the session was silent for 2 s.
        watcher.wait(timeout=15)
        assert watcher.stdout.read().strip() == "reset"
        assert 1.5 < time.monotonic() - t0 < 10
        assert _rsts_to_vanished(lab.client_ns) >= 1   # and the client end too
        watcher = _watch(lab)
        third = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", ECHO_ONCE),
                               capture_output=True, text=True, timeout=30)
        assert third.returncode == 0, third.stderr  # the slot is free again
    finally:
        quiet.kill()
        watcher.kill()
        subprocess.run(ns_cmd(lab.client_ns, "nft", "delete", "table", "inet", "tsvanish"),
                       capture_output=True, timeout=10)
        summary = stack.stop()
    log = (tmp_path / "socks.log").read_text()
    assert "idle timeout" in log
    if mode == "splice":
        assert summary["splice"]["idle_reset"] == 1


def test_sigterm_resets_running_downloads_after_the_drain_and_refuses_new_ones(
        lab, tmp_path):
    # All 20 clients start at once from one address: above the default of handshakes
    # one address may have in progress.
    stack = StackProcess(lab, "socks", "--mode", "splice", "--drain", "2",
                         "--max-handshakes-per-client", "32", log=tmp_path / "socks.log")
    stack.wait_ready()
    n = 20
    with Origin(lab.server_ns) as origin, _killed_at_exit(stack):
        f = origin.make_file("big.bin", 64 << 20, random=False)
        outs = [tmp_path / f"o{i}" for i in range(n)]
        curls = [_curl(lab, origin, f, out, "--limit-rate", "1M") for out in outs]
        deadline = time.monotonic() + 30
        while not all(o.exists() and o.stat().st_size > 0 for o in outs):
            assert time.monotonic() < deadline, "downloads did not start"
            time.sleep(0.1)  # poll interval while the downloads start
        t0 = time.monotonic()
        stack.proc.send_signal(signal.SIGTERM)
        stack.wait_logged("sessions may finish")
        # No new client is taken meanwhile: its SYN is answered with a RST.
        late = subprocess.run(ns_cmd(lab.client_ns, "curl", "-sS", "--socks5",
                                     "198.18.0.2:1080", "-o", "/dev/null",
                                     origin.url(f, "198.19.0.1")),
                              capture_output=True, text=True, timeout=30)
        assert late.returncode == 97 or late.returncode == 7, late.stderr
        stack.proc.wait(timeout=30)
        assert time.monotonic() - t0 < 10
        # Every peer got a RST it accepted: neither kernel holds a connection of the
        # downloads any more (curl itself notices only when its rate limit lets it
        # read again).
        for ns, port in ((lab.client_ns, "1080"), (lab.server_ns, "80")):
            ss = subprocess.run(ns_cmd(ns, "ss", "-Htn", "state", "established"),
                                capture_output=True, text=True, timeout=10).stdout
            assert f":{port} " not in ss, ss
        for c in curls:
            c.wait(timeout=60)
        assert all(c.returncode == 56 for c in curls)   # "connection reset by peer"
    text = (tmp_path / "socks.log").read_text()
    assert stack.proc.returncode == 0, text[-3000:]
    assert "20 sessions may finish" in text and "stopped: 20 sessions reset" in text


@contextlib.contextmanager
def _killed_at_exit(stack: StackProcess) -> Iterator[None]:
    """A test that fails before its own stop does not leave the stack running."""
    try:
        yield
    finally:
        if stack.proc.poll() is None:
            stack.proc.kill()
            stack.proc.wait(timeout=10)


def test_a_second_signal_stops_at_once(lab, tmp_path):
    stack = StackProcess(lab, "socks", "--mode", "splice", "--drain", "60",
                         log=tmp_path / "socks.log")
    stack.wait_ready()
    watcher = _watch(lab)
    quiet = subprocess.Popen(ns_cmd(lab.client_ns, sys.executable, "-c", QUIET_CLIENT),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert quiet.stdout.readline().strip().isdigit()
        stack.proc.send_signal(signal.SIGTERM)
        stack.wait_logged("sessions may finish")
        t0 = time.monotonic()
        stack.proc.send_signal(signal.SIGTERM)
        stack.proc.wait(timeout=20)
        assert time.monotonic() - t0 < 5
        watcher.wait(timeout=10)
        assert watcher.stdout.read().strip() == "reset"
    finally:
        quiet.kill()
        watcher.kill()
        if stack.proc.poll() is None:
            stack.proc.kill()
            stack.proc.wait(timeout=10)
    assert stack.proc.returncode == 0
