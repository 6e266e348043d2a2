"""Names through the stack: real clients ask the proxies for hosts by name, the stack
resolves them with DNS over its own UDP against a real DNS server (dnsmasq) in the
server namespace, and the transfers run spliced."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from apps.demo_names import udp_associate_query
from apps.labdns import DnsServer
from apps.labproc import ns_cmd, wait_until
from apps.origin import Origin
from tests.lab.stackproc import StackProcess

pytestmark = pytest.mark.lab

NAME = "origin.tapsplice.test"
ALIAS = "www.tapsplice.test"


@pytest.fixture
def dns(lab):
    with DnsServer(lab.server_ns, "198.19.0.1", {NAME: "198.19.0.1"},
                   aliases={ALIAS: NAME}) as server:
        yield server


def curl(lab, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(ns_cmd(lab.client_ns, "curl", "-sS", *args), capture_output=True,
                          text=True, timeout=timeout)


def test_curl_socks5_hostname_fetches_by_name_spliced(lab, dns, tmp_path):
    stack = StackProcess(lab, "socks", "--mode", "splice", "--dns", "198.19.0.1",
                         "--log-level", "info", log=tmp_path / "socks.log")
    try:
        stack.wait_ready()
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("n.bin", 8 << 20, random=True)
            for host in (NAME, ALIAS, NAME):  # the third comes from the cache
                out = tmp_path / "n.bin"
                proc = curl(lab, "--fail", "--socks5-hostname", "198.18.0.2:1080",
                            "-o", str(out), origin.url(f, host))
                assert proc.returncode == 0, proc.stderr
                assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
            t0 = time.monotonic()
            proc = curl(lab, "--socks5-hostname", "198.18.0.2:1080",
                        "http://nowhere.tapsplice.test/")
            assert proc.returncode == 97, proc.stderr  # curl: the proxy refused
            assert time.monotonic() - t0 < 3  # NXDOMAIN answers at once
    finally:
        summary = stack.stop()
    log = (tmp_path / "socks.log").read_text()
    assert "dest=nowhere.tapsplice.test:80 rep=0x04" in log
    assert "unknown host name 'nowhere.tapsplice.test'" in log
    assert summary["splice"]["splices"] == 3
    assert summary["splice"].get("copied_payload_bytes", 0) == 0
    assert summary["dns"].get("cache_hit", 0) >= 1, summary["dns"]
    assert dns.queries(NAME) == 1  # once for the name, then the cache
    assert dns.queries(ALIAS) == 1
    assert summary["udp"]["rx_datagrams"] >= 3


def test_curl_x_fetches_origins_by_name_and_unknown_names_get_502(lab, dns, tmp_path):
    stack = StackProcess(lab, "http-proxy", "--dns", "198.19.0.1",
                         log=tmp_path / "http.log")
    try:
        stack.wait_ready()
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("h.bin", 1 << 20, random=True)
            out = tmp_path / "h.bin"
            proc = curl(lab, "--fail", "-x", "http://198.18.0.2:3128", "-o", str(out),
                        origin.url(f, NAME))
            assert proc.returncode == 0, proc.stderr
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
            proc = curl(lab, "-x", "http://198.18.0.2:3128", "-w", "%{http_code}",
                        "http://nowhere.tapsplice.test/x")
            assert proc.stdout.endswith("502"), proc.stdout
            assert "nowhere.tapsplice.test" in proc.stdout
    finally:
        stack.stop()


def test_a_silent_dns_server_gets_504_within_the_resolver_deadline(lab, tmp_path):
    # 198.19.0.77 is nobody: the queries go unanswered (ARP fails), the deadline ends it.
    stack = StackProcess(lab, "http-proxy", "--dns", "198.19.0.77", "--dns-timeout", "1.5",
                         log=tmp_path / "http.log")
    try:
        stack.wait_ready()
        t0 = time.monotonic()
        proc = curl(lab, "-x", "http://198.18.0.2:3128", "-w", "%{http_code}",
                    "http://slow.tapsplice.test/")
        took = time.monotonic() - t0
        assert proc.stdout.endswith("504"), proc.stdout
        assert 1.0 < took < 4.0
    finally:
        stack.stop()


def test_a_real_socks5_client_sends_dns_queries_through_udp_associate(lab, tmp_path):
    """PySocks asks for UDP ASSOCIATE and sends a DNS query (dnspython) through the relay
    to dnsmasq, once to its address and once to its name (resolved by the stack)."""
    records = {NAME: "198.19.0.1", "dns.tapsplice.test": "198.19.0.1"}
    with DnsServer(lab.server_ns, "198.19.0.1", records) as dns:
        stack = StackProcess(lab, "socks", "--mode", "splice", "--dns", "198.19.0.1",
                             "--log-level", "info", log=tmp_path / "socks.log")
        try:
            stack.wait_ready()
            for server in ("198.19.0.1", "dns.tapsplice.test"):
                worked, text = udp_associate_query(lab, NAME, server)
                assert worked, text
                # The answer came from the DNS server's address and port, via the relay.
                assert text == "198.19.0.1 53 198.19.0.1", text
        finally:
            summary = stack.stop()
        assert dns.queries(NAME) == 2           # both went all the way to dnsmasq
        assert dns.queries("dns.tapsplice.test") == 1   # the stack resolved the relay's target
    lines = [ln for ln in (tmp_path / "socks.log").read_text().splitlines() if "dest=udp" in ln]
    assert len(lines) == 2, lines
    for line in lines:
        assert "rep=0x00" in line and "udp associate: 1 datagrams up, 1 down" in line, line
    assert summary["udp"]["tx_datagrams"] >= 4


def test_udp_associate_with_two_workers(lab, tmp_path):
    """With --workers 2 each relay port is chosen for the worker that holds the control
    connection (the client's port is in the request), so every association works
    whichever worker accepted it."""
    with DnsServer(lab.server_ns, "198.19.0.1", {NAME: "198.19.0.1"}) as dns:
        stack = StackProcess(lab, "socks", "--mode", "splice", "--workers", "2",
                             "--log-level", "info", log=tmp_path / "socks.log")
        try:
            stack.wait_logged("ready")
            answers = [udp_associate_query(lab, NAME, "198.19.0.1") for _ in range(8)]
        finally:
            stack.stop()
        assert answers == [(True, "198.19.0.1 53 198.19.0.1")] * 8
        assert dns.queries(NAME) == 8


def _page(root) -> None:
    """/index.html with eight scripts, each leaving a mark in the DOM."""
    scripts = []
    for i in range(8):
        (root / f"j{i}.js").write_text(
            f"document.body.insertAdjacentHTML('beforeend', '<p>js-ok-{i}</p>');\n")
        (root / f"j{i}.js").chmod(0o644)
        scripts.append(f'<script src="http://{ALIAS}/j{i}.js"></script>')
    (root / "index.html").write_text("<!doctype html><html><head><link rel=icon href=data:,>"
                                     "</head><body>" + "".join(scripts) + "</body></html>")
    (root / "index.html").chmod(0o644)


def test_chromium_through_the_splicing_socks_proxy_with_remote_names(lab, dns, tmp_path):
    """A browser set to the SOCKS5 proxy with names resolved by the proxy: Chromium is
    told every local lookup fails, so the page and its scripts (from a CNAME) load only
    if the proxy resolves them, over the stack's UDP, with dnsmasq."""
    stack = StackProcess(lab, "socks", "--mode", "splice", "--dns", "198.19.0.1",
                         "--log-level", "info", log=tmp_path / "socks.log")
    try:
        stack.wait_ready()
        # Chromium drops requests in flight when an address of its namespace changes:
        # the IPv6 link-local address must be past duplicate address detection.
        assert wait_until(ns_cmd(lab.client_ns, "bash", "-c",
                                 'test -z "$(ip -6 addr show tentative)"'), timeout=20)
        with Origin(lab.server_ns) as origin:
            _page(origin.docroot)
            cmd = ns_cmd(lab.client_ns, "chromium", "--headless", "--no-sandbox",
                         "--disable-gpu", "--no-first-run", "--disable-background-networking",
                         f"--user-data-dir={tmp_path / 'profile'}",
                         "--proxy-server=socks5://198.18.0.2:1080",
                         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 198.18.0.2",
                         "--dump-dom", f"http://{NAME}/index.html")
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    finally:
        summary = stack.stop()
    assert dom.returncode == 0, dom.stderr[-2000:]
    for i in range(8):
        assert f"js-ok-{i}<" in dom.stdout, (i, dom.stdout[-2000:])
    log = (tmp_path / "socks.log").read_text()
    assert f"dest={NAME}:80 rep=0x00" in log and f"dest={ALIAS}:80 rep=0x00" in log
    assert summary["splice"]["splices"] >= 2
    assert summary["splice"].get("copied_payload_bytes", 0) == 0
    assert dns.queries(NAME) == 1 and dns.queries(ALIAS) == 1   # then the stack's cache
