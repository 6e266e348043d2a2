"""The stack over raw sockets (`tapsplice lab up --raw`): the same commands with
``--lab`` on veth pairs whose stack ends sit in a namespace of their own, reached
through packet sockets (stack/netdev/raw.py). The router, the spliced SOCKS proxy and
the HTTP proxy carry curl traffic with kernel-side loss; the kernel beside the stack
stays silent; a link that goes down recovers; a veth deleted under the stack stops it
cleanly; workers share connections through a fanout group; and the README's recipe
(the proxy with its own MAC and address on a LAN, on a macvlan) carries curl."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from apps.lab import QUIET_TABLE, LabConfig, lab_down, lab_up
from apps.labproc import ns_cmd
from apps.origin import Origin
from tests.conftest import _in_ci, lab_unavailable_reason
from tests.lab.stackproc import StackProcess, kernel_drops, kernel_loss, ping, wait_logged
from tests.lab.test_splice_lab import kernel_server, socks_client  # noqa: F401 - a fixture

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(_lab_stale_cleanup: None) -> Iterator[LabConfig]:
    """A raw-socket lab with names unique to this test (replaces the TAP lab here, so
    that the imported fixtures run on it too)."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.fail(f"CI=true and {reason}" if _in_ci() else reason)
    cfg = LabConfig.unique("raw")
    try:
        lab_up(cfg, raw=True)
        yield cfg
    finally:
        lab_down(cfg)


def stack(lab: LabConfig, command: str, *extra: str, log) -> StackProcess:
    """`tapsplice COMMAND --lab` on the raw lab (its stack namespace named)."""
    return StackProcess(lab, command, "--stack-ns", lab.stack_ns, *extra, log=log)


def quiet_drops(lab: LabConfig) -> int:
    """Frames the stack namespace's kernel dropped at netdev ingress (never saw)."""
    out = subprocess.run(ns_cmd(lab.stack_ns, "nft", "list", "table", "netdev", QUIET_TABLE),
                         capture_output=True, text=True, timeout=10).stdout
    return sum(int(w.split()[0]) for w in out.split("packets")[1:])


def with_loss(lab: LabConfig, per_mille: int | None) -> None:
    for ns in (lab.client_ns, lab.server_ns):
        kernel_loss(ns, per_mille)


def curl_socks(lab: LabConfig, url: str, out) -> subprocess.CompletedProcess:
    return subprocess.run(ns_cmd(lab.client_ns, "curl", "-sS", "--fail", "--max-time", "100",
                                 "--socks5", "198.18.0.2:1080", "-o", str(out), url),
                          capture_output=True, text=True, timeout=120)


def test_router_over_raw_sockets_with_kernel_loss(lab, tmp_path):
    proc = stack(lab, "router", log=tmp_path / "router.log")
    try:
        proc.wait_ready()
        routed = ping(lab.client_ns, "198.19.0.1")
        assert routed.returncode == 0 and "ttl=63" in routed.stdout
        assert ping(lab.client_ns, "198.18.0.2", size=4000).returncode == 0  # fragments
        with_loss(lab, 5)
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("r.bin", 32 << 20, random=True)
            out = tmp_path / "r.bin"
            dl = subprocess.run(ns_cmd(lab.client_ns, "curl", "-sS", "--fail", "--max-time",
                                       "100", "-o", str(out), origin.url(f, "198.19.0.1")),
                                capture_output=True, text=True, timeout=120)
            assert dl.returncode == 0, dl.stderr
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
        assert all(kernel_drops(ns) > 0 for ns in (lab.client_ns, lab.server_ns))
    finally:
        with_loss(lab, None)
        summary = proc.stop()
    c = summary["stack"]
    assert c["rx_forwarded"] > 100
    assert c.get("drop.ipv4_bad_checksum", 0) == 0
    server = summary["devices"][lab.server_raw]
    assert server["rx_bytes"] > f.size
    # The veth handed the packet socket super-segments, not 1,500-byte frames.
    assert server["rx_frames"] < f.size // 1500 // 4
    client = summary["devices"][lab.client_raw]
    assert client["tx_bytes"] > f.size and client["tx_frames"] < f.size // 1500 // 4
    # Nothing the stack sent came back to it (PACKET_IGNORE_OUTGOING), nothing was for
    # another MAC, and the kernel beside the stack saw none of these frames.
    for dev in (server, client):
        assert dev["rx_dropped_other_host"] == 0 and dev["rx_errors"] == 0
    assert c.get("drop.eth_not_for_us", 0) == 0
    assert quiet_drops(lab) >= c["rx_frames"] - c.get("drop.eth_ipv6_unsupported", 0)


def test_spliced_socks_over_raw_sockets_with_loss_copies_nothing(lab, kernel_server,  # noqa: F811
                                                                tmp_path):
    with_loss(lab, 10)
    proc = stack(lab, "socks", "--mode", "splice", log=tmp_path / "socks.log")
    try:
        proc.wait_ready()
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("s.bin", 32 << 20, random=True)
            out = tmp_path / "s.bin"
            got = curl_socks(lab, origin.url(f, "198.19.0.1"), out)
            assert got.returncode == 0, got.stderr + proc.log.read_text()[-2000:]
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
        assert socks_client(lab, "upload", 7001, 16 << 20) == (1, 1)
        assert all(kernel_drops(ns) > 0 for ns in (lab.client_ns, lab.server_ns))
    finally:
        with_loss(lab, None)
        summary = proc.stop()
    sp = summary["splice"]
    assert sp["splices"] == 2
    assert sp.get("copied_payload_bytes", 0) == 0
    assert summary["tcp"]["segs_out"] < 60  # handshakes and SOCKS only: 48 MB went by


def test_http_proxy_over_raw_sockets_with_loss(lab, tmp_path):
    with_loss(lab, 10)
    proc = stack(lab, "http-proxy", "--host", "origin.test=198.19.0.1",
                 log=tmp_path / "http.log")
    try:
        proc.wait_ready()
        with Origin(lab.server_ns, addr="198.19.0.1") as origin:
            f = origin.make_file("h.bin", 4 << 20, random=True)
            for i in range(2):  # a miss, then the same URL again
                out = tmp_path / f"h{i}"
                got = subprocess.run(ns_cmd(lab.client_ns, "curl", "-sS", "--fail",
                                            "--max-time", "100", "-x",
                                            "http://198.18.0.2:3128", "-o", str(out),
                                            f"http://origin.test{f.url_path}"),
                                     capture_output=True, text=True, timeout=120)
                assert got.returncode == 0, got.stderr + proc.log.read_text()[-2000:]
                assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
        assert kernel_drops(lab.client_ns) > 0
    finally:
        with_loss(lab, None)
        proc.stop()
    access = [line for line in proc.log.read_text().splitlines()
              if "tapsplice.httpproxy.access" in line]
    assert len(access) == 2 and "/200" in access[0] and "/200" in access[1]


def test_a_link_that_goes_down_comes_back(lab, tmp_path):
    proc = stack(lab, "run", log=tmp_path / "flap.log")
    try:
        proc.wait_ready()
        for state in ("down", "up"):
            subprocess.run(["ip", "-n", lab.stack_ns, "link", "set", "dev", lab.client_raw,
                            state], check=True, timeout=10)
        deadline = time.monotonic() + 20
        while ping(lab.client_ns, "198.18.0.2", count=1).returncode != 0:
            assert proc.proc.poll() is None, proc.log.read_text()
            assert time.monotonic() < deadline, proc.log.read_text()
    finally:
        summary = proc.stop()
    text = proc.log.read_text()
    assert "went down" in text and "the link is back" in text
    assert summary["devices"][lab.client_raw]["rx_link_down"] == 1


def test_a_veth_deleted_under_the_stack_stops_it_cleanly(lab, tmp_path):
    proc = stack(lab, "run", log=tmp_path / "gone.log")
    proc.wait_ready()
    subprocess.run(["ip", "-n", lab.client_ns, "link", "del", lab.client_tap], check=True,
                   timeout=10)
    try:
        code = proc.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.proc.kill()
        proc.proc.wait(timeout=5)
        raise AssertionError("the stack did not stop: " + proc.log.read_text()) from None
    text = proc.log.read_text()
    assert code == 1, text
    assert f"raw interface {lab.client_raw} disappeared" in text
    assert '"device_gone": 1' in text  # the counters were printed at exit
    assert "Traceback" not in text


def test_an_address_on_a_raw_interface_is_warned_about(lab, tmp_path):
    subprocess.run(["ip", "-n", lab.stack_ns, "addr", "add", "198.18.0.77/24", "dev",
                    lab.client_raw], check=True, timeout=10)
    proc = stack(lab, "run", log=tmp_path / "addr.log")
    try:
        proc.wait_ready()
    finally:
        proc.stop()
    text = proc.log.read_text()
    assert f"raw interface {lab.client_raw} has host addresses (198.18.0.77)" in text
    assert f"raw interface {lab.server_raw}" not in text


def test_ipv6_left_on_a_raw_interface_is_warned_about(lab, tmp_path):
    subprocess.run(ns_cmd(lab.stack_ns, "sysctl", "-qw",
                          f"net.ipv6.conf.{lab.server_raw}.disable_ipv6=0"),
                   check=True, timeout=10)
    deadline = time.monotonic() + 10  # the kernel adds the link-local address itself
    while "fe80::" not in subprocess.run(
            ["ip", "-n", lab.stack_ns, "-6", "addr", "show", "dev", lab.server_raw],
            capture_output=True, text=True, timeout=10).stdout:
        assert time.monotonic() < deadline, "no IPv6 link-local address appeared"
        time.sleep(0.05)  # poll interval while addrconf runs
    proc = stack(lab, "run", log=tmp_path / "ipv6.log")
    try:
        proc.wait_ready()
    finally:
        proc.stop()
    text = proc.log.read_text()
    assert f"raw interface {lab.server_raw} has host addresses (fe80::" in text
    assert f"raw interface {lab.client_raw}" not in text


def test_the_kernel_beside_the_stack_answers_nothing(lab):
    """No stack running: the stack namespace's kernel, with an address of the client
    network on another interface, still answers no ARP on the raw interface."""
    subprocess.run(["ip", "-n", lab.stack_ns, "addr", "add", "198.18.0.2/32", "dev", "lo"],
                   check=True, timeout=10)
    before = quiet_drops(lab)
    assert ping(lab.client_ns, "198.18.0.2", count=2).returncode != 0
    assert quiet_drops(lab) > before  # the ARP requests arrived and were dropped


def test_two_workers_share_connections_over_a_fanout_group(lab, kernel_server,  # noqa: F811
                                                          tmp_path):
    proc = stack(lab, "socks", "--mode", "splice", "--workers", "2", "--max-connections",
                 "1000", "--max-handshakes-per-client", "300", log=tmp_path / "workers.log")
    proc.wait_logged("ready")
    try:
        assert socks_client(lab, "echo", 7000, 16 << 10, count=300) == (300, 300)
    finally:
        summary = proc.stop()
    assert summary["splice"]["splices"] == 300
    assert summary["splice"].get("copied_payload_bytes", 0) == 0
    per_worker = [w["connections"] for w in summary["workers"]]
    assert len(per_worker) == 2 and min(per_worker) >= 60, per_worker


# -- the deployment recipe (README, "Raw sockets") ------------------------------------
LAN = "198.18.7"  # one network: clients, an origin, the proxy host and the proxy


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


def _lan_port(lan_ns: str, ns: str, dev: str, peer: str) -> None:
    """A veth from namespace ``ns`` (``dev``) into the LAN bridge (``peer``), made
    inside the LAN namespace with one end moved straight to ``ns``."""
    _ip("-n", lan_ns, "link", "add", peer, "type", "veth", "peer", "name", dev, "netns", ns)
    _ip("-n", lan_ns, "link", "set", peer, "master", "br0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", dev, "up")


@pytest.fixture
def recipe(_lab_stale_cleanup: None) -> Iterator[dict[str, str]]:
    """A LAN (a bridge) with a client, an origin and a proxy host on it; the proxy host
    has its own address on eth0 and a macvlan ts0 on eth0 for the proxy, set up as the
    README's recipe says (no address, IPv6 off, netdev ingress drop)."""
    a, b = LabConfig.unique("recipe"), LabConfig.unique("recipe")
    names = {"client": a.client_ns, "origin": a.server_ns, "host": a.stack_ns,
             "lan": b.client_ns}
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
        _ip("-n", names["lan"], "link", "add", "br0", "type", "bridge")
        _ip("-n", names["lan"], "link", "set", "br0", "up")
        for role, dev, addr in (("client", "eth0", f"{LAN}.1/24"),
                                ("origin", "eth0", f"{LAN}.2/24"),
                                ("host", "eth0", f"{LAN}.3/24")):
            _lan_port(names["lan"], names[role], dev, f"p-{role}")
            _ip("-n", names[role], "addr", "add", addr, "dev", dev)
        # The recipe proper, on the proxy host:
        host = names["host"]
        _ip("-n", host, "link", "add", "ts0", "link", "eth0", "type", "macvlan", "mode",
            "bridge")
        _ip("-n", host, "link", "set", "ts0", "up")
        from apps.lab import quiet_host_side
        quiet_host_side(host, ["ts0"])
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_recipe_proxy_with_its_own_mac_and_address_on_a_lan(recipe, tmp_path):
    ctl = tmp_path / "proxy.sock"
    log = tmp_path / "proxy.log"
    argv = [sys.executable, "-m", "apps.cli", "socks", "--mode", "splice", "--raw", "ts0",
            "--addr", f"{LAN}.10/24", "--netns", recipe["host"], "--listen",
            f"{LAN}.10:1080", "--control", str(ctl)]
    proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_logged(proc, log, "ready")
        # The host keeps its own address on the LAN; the proxy answers on its own.
        assert ping(recipe["client"], f"{LAN}.3").returncode == 0
        assert ping(recipe["client"], f"{LAN}.10").returncode == 0
        with Origin(recipe["origin"], addr=f"{LAN}.2") as origin:
            f = origin.make_file("lan.bin", 16 << 20, random=True)
            out = tmp_path / "lan.bin"
            got = subprocess.run(ns_cmd(recipe["client"], "curl", "-sS", "--fail",
                                        "--max-time", "100", "--socks5", f"{LAN}.10:1080",
                                        "-o", str(out), origin.url(f, f"{LAN}.2")),
                                 capture_output=True, text=True, timeout=120)
            assert got.returncode == 0, got.stderr + log.read_text()[-2000:]
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
        stat = subprocess.run([sys.executable, "-m", "apps.cli", "stat", "--control",
                               str(ctl), "--counters", "--json"],
                              capture_output=True, text=True, timeout=30)
        assert stat.returncode == 0, stat.stderr
        counters = json.loads(stat.stdout)["counters"]
        assert counters["copied_payload_bytes"] == 0
        assert counters["devices"]["ts0"]["rx_frames"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "host addresses" not in text  # the recipe leaves none on ts0
    summary = json.loads(text[text.index("{\n"):])
    assert summary["splice"]["splices"] == 1


def test_no_offload_is_refused_on_raw_interfaces(lab, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "apps.cli", "run", "--lab", "--no-offload",
                           "--client-ns", lab.client_ns, "--client-tap", lab.client_tap,
                           "--server-ns", lab.server_ns, "--server-tap", lab.server_tap,
                           "--stack-ns", lab.stack_ns],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "--no-offload cannot work on a packet socket" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_raw_lab_status_refusal_and_removal(lab):
    from apps.lab import LabError, lab_status, list_netns

    st = lab_status(lab)
    assert st["up"] and st["raw"]
    ends = {d["tap"]: d for d in st["stack"]["interfaces"]}
    assert set(ends) == {lab.client_raw, lab.server_raw}
    assert all(d["addresses"] == [] and d["state"] == "UP" for d in ends.values())
    lab_up(lab)  # again, kind not given: the raw lab it is (idempotent)
    rules = subprocess.run(ns_cmd(lab.stack_ns, "nft", "list", "table", "netdev", QUIET_TABLE),
                           capture_output=True, text=True, timeout=10).stdout
    assert rules.count("drop") == 2  # one rule per interface, not one more per `lab up`
    with pytest.raises(LabError, match="raw-socket"):
        lab_up(lab, raw=False)
    lab_down(lab)
    assert not {lab.client_ns, lab.server_ns, lab.stack_ns} & set(list_netns())


def test_a_veth_deleted_under_two_workers_stops_them_all(lab, tmp_path):
    proc = stack(lab, "run", "--workers", "2", log=tmp_path / "gone2.log")
    proc.wait_logged("ready")
    kids = proc.worker_pids()
    assert len(kids) == 2
    subprocess.run(["ip", "-n", lab.server_ns, "link", "del", lab.server_tap], check=True,
                   timeout=10)
    try:
        code = proc.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.proc.kill()
        proc.proc.wait(timeout=5)
        raise AssertionError("the workers did not stop: " + proc.log.read_text()) from None
    text = proc.log.read_text()
    assert code == 1, text
    assert f"raw interface {lab.server_raw} disappeared" in text
    assert "Traceback" not in text
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in kids):
        assert time.monotonic() < deadline, "a worker outlived the interface"
        time.sleep(0.05)  # poll interval while the supervisor reaps them


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_frames_dropped_on_their_way_out_are_counted_without_a_spin(lab, tmp_path):
    """An egress rule drops everything the stack sends (the socket answers ENOBUFS and
    stays writable): counted as transmit errors, never a busy loop, and traffic flows
    again once the rule is gone."""
    chain = (f"table netdev tsout {{\n chain out {{\n type filter hook egress device "
             f"\"{lab.client_raw}\" priority 0;\n counter drop\n }}\n}}\n")
    proc = stack(lab, "run", log=tmp_path / "nobufs.log")
    try:
        proc.wait_ready()
        subprocess.run(ns_cmd(lab.stack_ns, "nft", "-f", "-"), input=chain, text=True,
                       check=True, timeout=10)
        before, t0 = cpu_seconds(proc.proc.pid), time.monotonic()
        assert ping(lab.client_ns, "198.18.0.2", count=4).returncode != 0
        busy = (cpu_seconds(proc.proc.pid) - before) / (time.monotonic() - t0)
        assert busy < 0.5, f"the stack used {busy:.0%} of a core while its frames dropped"
        subprocess.run(ns_cmd(lab.stack_ns, "nft", "delete", "table", "netdev", "tsout"),
                       check=True, timeout=10)
        assert ping(lab.client_ns, "198.18.0.2").returncode == 0
    finally:
        summary = proc.stop()
    dev = summary["devices"][lab.client_raw]
    assert dev["tx_errors"] >= 4 and dev["tx_backlogged"] == 0


def test_ipv6_over_raw_sockets(lab, tmp_path):
    """The stack's IPv6 is its own on raw sockets too (the host side's stays off):
    ping6 to it and through its router, and curl -6 of a file through it."""
    from apps.labproc import wait_until

    proc = stack(lab, "router", log=tmp_path / "router6.log")
    try:
        proc.wait_ready()
        assert wait_until(ns_cmd(lab.client_ns, "ping", "-6", "-c", "1", "-W", "1",
                                 "2001:2:0:1::2"), timeout=20), proc.log.read_text()
        routed = subprocess.run(ns_cmd(lab.client_ns, "ping", "-6", "-c", "2", "-i", "0.2",
                                       "-W", "1", "2001:2:0:2::1"),
                                capture_output=True, text=True, timeout=30)
        assert routed.returncode == 0 and "ttl=63" in routed.stdout, routed.stdout
        with Origin(lab.server_ns, addr="[::]") as origin:
            f = origin.make_file("r6.bin", 8 << 20, random=True)
            out = tmp_path / "r6.bin"
            subprocess.run(ns_cmd(lab.client_ns, "curl", "-6", "-g", "-sS", "--fail",
                                  "--noproxy", "*", "--max-time", "60", "-o", str(out),
                                  origin.url(f, "[2001:2:0:2::1]")), check=True, timeout=70)
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    finally:
        summary = proc.stop()
    assert summary["stack"]["rx_forwarded"] > 100
    assert summary["devices"][lab.client_raw]["rx_dropped_other_host"] == 0
