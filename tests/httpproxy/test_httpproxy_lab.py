"""`tapsplice http-proxy --lab` between curl in the client namespace and nginx in the
server namespace: a miss then a hit, two URLs on one kept-alive connection, and a
CONNECT to a port that is not allowed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.stackproc import StackProcess
from tools.bench.proc import ns_cmd
from tools.origin import Origin

pytestmark = pytest.mark.lab

PROXY = "http://198.18.0.2:3128"


def curl(ns: str, *args: str) -> subprocess.CompletedProcess:
    cmd = ns_cmd(ns, "curl", "-sS", "--max-time", "60", "-x", PROXY, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=70)


def test_http_proxy_cache_keep_alive_and_connect_policy(lab, tmp_path: Path) -> None:
    stack = StackProcess(lab, "http-proxy", "--host", "origin.test=198.19.0.1",
                         log=tmp_path / "proxy.log")
    try:
        stack.wait_ready()
        with Origin(lab.server_ns, addr="198.19.0.1") as origin:
            a = origin.make_file("a.bin", 1 << 20, random=True)
            b = origin.make_file("b.bin", 300_000, random=True)
            day_ago = time.time() - 86400
            for f in (a, b):   # Last-Modified a day ago: heuristic freshness of hours
                os.utime(f.path, (day_ago, day_ago))
            url_a, url_b = (f"http://origin.test{f.url_path}" for f in (a, b))
            got = tmp_path / "a1"
            miss = curl(lab.client_ns, "-D", str(tmp_path / "h1"), "-o", str(got), url_a)
            assert miss.returncode == 0, miss.stderr + stack.log.read_text()
            assert hashlib.sha256(got.read_bytes()).hexdigest() == a.sha256
            hit = curl(lab.client_ns, "-D", str(tmp_path / "h2"), "-o", str(got), url_a)
            assert hit.returncode == 0, hit.stderr
            assert hashlib.sha256(got.read_bytes()).hexdigest() == a.sha256
            assert "age:" not in (tmp_path / "h1").read_text().lower()
            assert "age:" in (tmp_path / "h2").read_text().lower()
            # Two URLs on one command line: curl reuses the kept-alive connection.
            two = curl(lab.client_ns, "-o", str(tmp_path / "b1"), "-o", str(tmp_path / "b2"),
                       "-w", "%{num_connects} ", url_b, url_b)
            assert two.returncode == 0, two.stderr
            assert two.stdout.split() == ["1", "0"]
            assert (tmp_path / "b2").read_bytes() == (tmp_path / "b1").read_bytes()
            assert hashlib.sha256((tmp_path / "b1").read_bytes()).hexdigest() == b.sha256
            denied = curl(lab.client_ns, "-p", "-o", "/dev/null", "http://origin.test:8080/")
            assert denied.returncode != 0 and "403" in denied.stderr
    finally:
        stack.stop()
    text = stack.log.read_text()
    access = [line.split(": ", 1)[1].split() for line in text.splitlines()
              if "tapsplice.httpproxy.access" in line]
    assert [(f[3], f[5], f[6]) for f in access] == [
        ("TCP_MISS/200", "GET", url_a), ("TCP_MEM_HIT/200", "GET", url_a),
        ("TCP_MISS/200", "GET", url_b), ("TCP_MEM_HIT/200", "GET", url_b),
        ("TCP_DENIED/403", "CONNECT", "origin.test:8080")], text
    assert access[0][8] == "HIER_DIRECT/198.19.0.1" and access[1][8] == "HIER_NONE/-"
    assert int(access[0][4]) > 1 << 20
