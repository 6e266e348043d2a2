"""The splicing SOCKS proxy between real Linux TCP stacks: transfers both ways, option
combinations, half-close and resets relayed, many concurrent splices, and no payload
copied by the stack."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from apps.labproc import ns_cmd
from apps.origin import Origin
from tests.lab.stackproc import StackProcess, kernel_drops, kernel_loss

pytestmark = pytest.mark.lab

# A kernel server in the server namespace: 7000 echo, 7001 sha256 of what it got
# (sent after the client's FIN), 7002 reset after the first bytes, 7003 a source.
SERVER = textwrap.dedent("""
    import hashlib, socket, struct, threading
    def serve(port, handle):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("198.19.0.1", port)); s.listen(2048)
        while True:
            c, _ = s.accept()
            threading.Thread(target=handle, args=(c,), daemon=True).start()
    def echo(c):
        while (b := c.recv(1 << 20)):
            c.sendall(b)
        c.close()
    def digest(c):
        h = hashlib.sha256()
        while (b := c.recv(1 << 20)):
            h.update(b)
        c.sendall(h.hexdigest().encode()); c.close()
    def reset(c):
        c.recv(10)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    def source(c):
        n = int(c.recv(32).split()[0]); block = b"s" * 65536
        while n > 0:
            c.sendall(block[:min(n, len(block))]); n -= len(block)
        c.close()
    for port, fn in ((7000, echo), (7001, digest), (7002, reset), (7003, source)):
        threading.Thread(target=serve, args=(port, fn), daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait(600)
""")

# A SOCKS5 client in the client namespace: CONNECT, then a scenario.
CLIENT = textwrap.dedent("""
    import asyncio, hashlib, socket, struct, sys
    scenario, port, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = hashlib.sha256(b"x").digest() * (size // 32) if size else b""
    async def socks(port):
        r, w = await asyncio.open_connection("198.18.0.2", 1080)
        w.write(b"\\x05\\x01\\x00"); await w.drain()
        assert await r.readexactly(2) == b"\\x05\\x00"
        w.write(b"\\x05\\x01\\x00\\x01" + socket.inet_aton("198.19.0.1") + struct.pack("!H", port))
        rep = await r.readexactly(10)
        assert rep[1] == 0, rep
        return r, w
    async def one():
        r, w = await socks(port)
        if scenario == "echo":
            async def send():
                w.write(data); await w.drain(); w.write_eof()
            t = asyncio.ensure_future(send())
            got = await r.read(-1); await t
            return got == data
        if scenario == "upload":
            w.write(data); await w.drain(); w.write_eof()
            return (await r.read(-1)).decode() == hashlib.sha256(data).hexdigest()
        if scenario == "download":
            w.write(b"%d\\n" % size); await w.drain()
            got = await r.read(-1)
            return got == b"s" * size
        if scenario == "reset":
            w.write(b"hello"); await w.drain()
            try:
                await r.read(-1)
            except ConnectionResetError:
                return True
            return False
    async def main():
        res = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 300)
        print(sum(res), len(res))
    asyncio.run(main())
""")


@pytest.fixture
def kernel_server(lab):
    proc = subprocess.Popen(ns_cmd(lab.server_ns, sys.executable, "-c", SERVER),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def socks_client(lab, scenario: str, port: int, size: int, count: int = 1) -> tuple[int, int]:
    proc = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", CLIENT, scenario,
                                 str(port), str(size), str(count)),
                          capture_output=True, text=True, timeout=330)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok, total = map(int, proc.stdout.split())
    return ok, total


@pytest.fixture
def spliced(lab, tmp_path):
    # Up to 1,000 clients from one address at once. A thousand handshakes queue behind
    # one another on a busy two-core machine: the timeouts are not what these tests test.
    stack = StackProcess(lab, "socks", "--mode", "splice", "--max-connections", "2000",
                         "--max-per-client", "2000", "--max-handshakes-per-client", "2000",
                         "--handshake-timeout", "60", "--connect-timeout", "60",
                         log=tmp_path / "socks.log")
    stack.wait_ready()
    holder = {"stack": stack}
    yield holder
    if "summary" not in holder:
        holder["summary"] = stack.stop()


def finish(holder) -> dict:
    holder["summary"] = holder["stack"].stop()
    return holder["summary"]


def sysctl(ns: str, key: str, value: int) -> None:
    subprocess.run(ns_cmd(ns, "sysctl", "-qw", f"net.ipv4.{key}={value}"), check=True,
                   timeout=10)


def test_large_download_and_upload_intact_with_nothing_copied(lab, kernel_server, spliced,
                                                              tmp_path):
    with Origin(lab.server_ns) as origin:
        f = origin.make_file("s.bin", 64 << 20, random=True)
        out = tmp_path / "s.bin"
        proc = subprocess.run(ns_cmd(lab.client_ns, "curl", "-sS", "--fail", "--socks5",
                                     "198.18.0.2:1080", "-o", str(out),
                                     origin.url(f, "198.19.0.1")),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    assert socks_client(lab, "upload", 7001, 64 << 20) == (1, 1)
    summary = finish(spliced)
    sp = summary["splice"]
    assert sp["splices"] == 2
    assert sp.get("copied_payload_bytes", 0) == 0
    # The proxy's TCP only did handshakes and the SOCKS exchange; 128 MB went by it.
    assert summary["tcp"]["segs_out"] < 40


def test_half_close_and_resets_are_relayed(lab, kernel_server, spliced):
    # The client's FIN reaches the server (which answers only then) and the server's
    # FIN comes back: "upload" only completes if both half-closes were relayed.
    assert socks_client(lab, "upload", 7001, 1 << 20) == (1, 1)
    # A reset from the server reaches the client as a reset.
    assert socks_client(lab, "reset", 7002, 0) == (1, 1)
    summary = finish(spliced)
    assert summary["splice"]["splices"] == 2


def test_loss_on_both_kernel_sides_and_faults_on_the_stack(lab, kernel_server, tmp_path):
    """Loss in both namespaces (nftables; this kernel has no netem) plus the stack's own
    --impair: the peers' TCPs repair everything end to end through the splice."""
    for ns in (lab.client_ns, lab.server_ns):
        kernel_loss(ns, 10)
    stack = StackProcess(lab, "socks", "--mode", "splice", "--impair",
                         "loss=0.5%,duplicate=0.5%,reorder=1%,delay=1ms", "--seed", "5",
                         log=tmp_path / "f.log")
    try:
        stack.wait_ready()
        assert socks_client(lab, "echo", 7000, 16 << 20) == (1, 1)
        assert socks_client(lab, "upload", 7001, 16 << 20) == (1, 1)
        assert all(kernel_drops(ns) > 0 for ns in (lab.client_ns, lab.server_ns))
    finally:
        for ns in (lab.client_ns, lab.server_ns):
            kernel_loss(ns, None)
        summary = stack.stop()
    assert summary["splice"]["splices"] == 2
    assert summary["splice"].get("copied_payload_bytes", 0) == 0


def test_smaller_mtu_toward_the_server_splits_client_segments(lab, kernel_server, tmp_path):
    """The server's MSS is smaller than the client's (docs/splice.md §5.1): client segments are
    relayed as super-segments cut to the server's MSS by the kernel (gso_size)."""
    subprocess.run(["ip", "-n", lab.server_ns, "link", "set", lab.server_tap, "mtu", "1280"],
                   check=True, timeout=10)
    stack = StackProcess(lab, "socks", "--mode", "splice", log=tmp_path / "mtu.log")
    try:
        stack.wait_ready()
        assert socks_client(lab, "upload", 7001, 16 << 20) == (1, 1)
        assert socks_client(lab, "echo", 7000, 4 << 20) == (1, 1)
    finally:
        summary = stack.stop()
    assert summary["splice"]["splices"] == 2
    assert summary["splice"].get("copied_payload_bytes", 0) == 0
    assert summary["devices"][lab.server_tap]["tx_dropped_gso"] == 0


def test_splice_without_offloads(lab, kernel_server, tmp_path):
    stack = StackProcess(lab, "socks", "--mode", "splice", "--no-offload",
                         log=tmp_path / "plain.log")
    try:
        stack.wait_ready()
        assert socks_client(lab, "echo", 7000, 8 << 20) == (1, 1)
    finally:
        summary = stack.stop()
    assert summary["splice"]["splices"] == 1
    assert summary["splice"].get("copied_payload_bytes", 0) == 0
    # Plain frames: the kernel handed over MTU-sized segments, thousands of them.
    assert summary["splice"]["flow_path_segments"] > 8 << 20 >> 11


def test_many_concurrent_splices(lab, kernel_server, spliced):
    ok, total = socks_client(lab, "echo", 7000, 32 << 10, count=1000)
    assert (ok, total) == (1000, 1000)
    summary = finish(spliced)
    assert summary["splice"]["splices"] == 1000
    assert summary["splice"].get("copied_payload_bytes", 0) == 0


def test_two_workers_share_the_connections(lab, kernel_server, tmp_path):
    # 400 clients from one address start at once.
    stack = StackProcess(lab, "socks", "--mode", "splice", "--workers", "2",
                         "--max-connections", "2000", "--max-handshakes-per-client", "400",
                         log=tmp_path / "workers.log")
    stack.wait_logged("ready")
    assert socks_client(lab, "echo", 7000, 32 << 10, count=400) == (400, 400)
    assert socks_client(lab, "download", 7003, 8 << 20, count=4) == (4, 4)
    summary = stack.stop()
    assert summary["splice"]["splices"] == 404
    assert summary["splice"].get("copied_payload_bytes", 0) == 0
    per_worker = [w["connections"] for w in summary["workers"]]
    # each worker accepted clients and opened their server connections itself (worker
    # 1 after learning the server's MAC through worker 0)
    assert len(per_worker) == 2 and min(per_worker) >= 100, per_worker
    assert summary["arp_share"]["arp_learned"] >= 1


def test_workers_stop_together_when_one_dies(lab, tmp_path):
    stack = StackProcess(lab, "socks", "--workers", "2", log=tmp_path / "die.log")
    stack.wait_logged("ready")
    kids = stack.worker_pids()
    assert len(kids) == 2
    os.kill(int(kids[1]), signal.SIGKILL)
    assert stack.proc.wait(timeout=30) == 1
    assert "worker 1 exited" in stack.log.read_text()
    for pid in kids:  # the supervisor stopped and reaped the other one too
        assert not os.path.exists(f"/proc/{pid}")


def test_workers_stop_when_the_supervisor_is_killed(lab, tmp_path):
    stack = StackProcess(lab, "socks", "--workers", "2", log=tmp_path / "orphan.log")
    stack.wait_logged("ready")
    kids = stack.worker_pids()
    assert len(kids) == 2
    stack.proc.kill()
    stack.proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{pid}") and
              open(f"/proc/{pid}/stat").read().split()[2] != "Z" for pid in kids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)  # poll interval while the workers stop


OPTIONS = ("tcp_timestamps", "tcp_sack", "tcp_window_scaling")
# Each option off on the client's kernel, on the server's, and on both; the full
# 64-combination matrix runs with --soak.
COMBOS = [dict.fromkeys(sides, key) for key in OPTIONS
          for sides in (("client",), ("server",), ("client", "server"))]
ALL_COMBOS = [
    {side: [k for k, on in zip(OPTIONS, bits, strict=True) if not on]
     for side, bits in (("client", c), ("server", s))}
    for c, s in itertools.product(itertools.product((1, 0), repeat=3), repeat=2)]


def _combo_id(c: dict) -> str:
    return "-".join(f"{side}-no-{key[4:]}" for side, key in c.items()) or "all-on"


@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_option_combinations(lab, kernel_server, spliced, combo):
    for side, key in combo.items():
        sysctl(lab.client_ns if side == "client" else lab.server_ns, key, 0)
    t0 = time.monotonic()
    assert socks_client(lab, "echo", 7000, 8 << 20) == (1, 1)
    assert socks_client(lab, "download", 7003, 8 << 20) == (1, 1)
    assert time.monotonic() - t0 < 60
    summary = finish(spliced)
    assert summary["splice"]["splices"] == 2


@pytest.mark.soak
@pytest.mark.parametrize("combo", ALL_COMBOS, ids=lambda c: "c-" + "+".join(
    k[4:] for k in c["client"]) + "_s-" + "+".join(k[4:] for k in c["server"]))
def test_every_option_combination(lab, kernel_server, spliced, combo):
    for side, keys in combo.items():
        for key in keys:
            sysctl(lab.client_ns if side == "client" else lab.server_ns, key, 0)
    assert socks_client(lab, "echo", 7000, 4 << 20) == (1, 1)
    assert socks_client(lab, "download", 7003, 4 << 20) == (1, 1)
