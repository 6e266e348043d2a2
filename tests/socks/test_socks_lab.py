"""The SOCKS proxy (copy mode) in the lab: curl in the client namespace through the
stack to nginx in the server namespace, with RFC 1929 auth and a name from --host."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.labproc import ns_cmd, wait_until
from apps.origin import Origin

pytestmark = pytest.mark.lab


@pytest.fixture
def proxy(lab, tmp_path: Path) -> Iterator[tuple]:
    """`python -m apps.socks.cli --lab --mode copy` for this lab; stopped afterwards."""
    users = tmp_path / "users"
    users.write_text("# lab user\nalice:wonder land\n")
    log = tmp_path / "proxy.log"
    argv = [sys.executable, "-m", "apps.socks.cli", "--lab", "--mode", "copy",
            "--client-ns", lab.client_ns, "--client-tap", lab.client_tap,
            "--server-ns", lab.server_ns, "--server-tap", lab.server_tap,
            "--users", str(users), "--host", "origin.test=198.19.0.1",
            "--allow-port", "80"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = wait_until(ns_cmd(lab.client_ns, "ping", "-c", "1", "-W", "1", "198.18.0.2"),
                           timeout=20)
        assert ready, log.read_text()
        yield proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def curl(ns: str, proxy_url: str, url: str, output: Path) -> subprocess.CompletedProcess:
    cmd = ns_cmd(ns, "curl", "-sS", "--fail", "--max-time", "60", "-x", proxy_url,
                 "-o", str(output), url)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=70)


def test_curl_through_the_proxy(lab, proxy, tmp_path: Path) -> None:
    proc, log = proxy
    target = tmp_path / "got.bin"
    with Origin(lab.server_ns, addr="198.19.0.1") as origin:
        f = origin.make_file("socks.bin", 2 << 20, random=True)
        ok = curl(lab.client_ns, "socks5h://alice:wonder%20land@198.18.0.2:1080",
                  f"http://origin.test{f.url_path}", target)
        assert ok.returncode == 0, ok.stderr + log.read_text()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == f.sha256
        bad = curl(lab.client_ns, "socks5h://alice:nope@198.18.0.2:1080",
                   f"http://origin.test{f.url_path}", tmp_path / "bad.bin")
        assert bad.returncode != 0
        denied = curl(lab.client_ns, "socks5h://alice:wonder%20land@198.18.0.2:1080",
                      "http://origin.test:8080/", tmp_path / "denied.bin")
        assert denied.returncode != 0
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    text = log.read_text()
    assert proc.returncode == 0, text
    access = [line for line in text.splitlines() if "tapsplice.socks.access" in line]
    assert len(access) == 3, text
    assert "user=alice dest=origin.test:80 rep=0x00" in access[0]
    fields = dict(w.split("=", 1) for w in access[0].split() if "=" in w)
    # The whole body came down, plus the response headers; the request went up.
    assert 2 << 20 < int(fields["down"]) < (2 << 20) + 4096
    assert 0 < int(fields["up"]) < 4096
    assert "authentication failed" in access[1]
    assert "rep=0x02" in access[2] and "destination not allowed" in access[2]
