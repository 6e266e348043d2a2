"""`tapsplice http-proxy --lab` between curl (or Python's urllib) in the client namespace
and nginx in the server namespace: a miss then a hit, URLs on one kept-alive
connection with their bodies spliced one way, and a CONNECT to a port that is not
allowed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.labproc import ns_cmd, wait_until
from apps.origin import Origin
from tests.lab.stackproc import StackProcess, kernel_drops, kernel_loss

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


URLLIB_FETCH = """
import hashlib, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": sys.argv[1]}))
for url in sys.argv[2:]:
    with opener.open(url, timeout=60) as r:
        print(r.status, hashlib.sha256(r.read()).hexdigest(), flush=True)
"""


@pytest.mark.parametrize("loss", [None, 10], ids=["clean", "loss-1pct"])
def test_kept_alive_connection_splices_each_large_body(lab, tmp_path: Path, loss) -> None:
    """Four URLs on one curl connection: three large bodies spliced one way
    (docs/splice.md §7), then a hit; with 1% loss on the client's and the origin's kernels
    too."""
    stack = StackProcess(lab, "http-proxy", "--host", "origin.test=198.19.0.1",
                         "--cache-size", "16M", "--max-object", "3M",
                         log=tmp_path / "proxy.log")
    try:
        stack.wait_ready()
        with Origin(lab.server_ns, addr="198.19.0.1") as origin:
            files = [origin.make_file(f"k{i}.bin", size, random=True)
                     for i, size in enumerate((6 << 20, 2 << 20, 400_000))]
            day_ago = time.time() - 86400
            for f in files:   # heuristically fresh for hours: the repeat is a hit
                os.utime(f.path, (day_ago, day_ago))
            urls = [f"http://origin.test{f.url_path}" for f in files]
            if loss:
                kernel_loss(lab.client_ns, loss)
                kernel_loss(lab.server_ns, loss)
            outs = [tmp_path / f"out{i}" for i in range(4)]
            args = [a for o in outs for a in ("-o", str(o))]
            run = curl(lab.client_ns, *args, "-w", "%{num_connects} ", *urls, urls[1])
            assert run.returncode == 0, run.stderr + stack.log.read_text()[-3000:]
            assert run.stdout.split() == ["1", "0", "0", "0"]   # one connection
            for out, f in zip(outs, [*files, files[1]], strict=True):
                assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
            # Python's urllib (a new connection per URL, Connection: close): the
            # last response on a connection is spliced both ways.
            fetch = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", URLLIB_FETCH,
                                          PROXY, urls[0], urls[2]),
                                   capture_output=True, text=True, timeout=120)
            assert fetch.returncode == 0, fetch.stderr
            assert fetch.stdout.split() == ["200", files[0].sha256, "200", files[2].sha256]
            if loss:
                drops = kernel_drops(lab.client_ns) + kernel_drops(lab.server_ns)
                assert drops > 0   # the loss was real
                kernel_loss(lab.client_ns, None)
                kernel_loss(lab.server_ns, None)
    finally:
        summary = stack.stop()
    splice = summary["splice"]
    assert splice.get("oneway_done", 0) >= 3, summary
    assert splice.get("copied_payload_bytes", 0) == 0
    assert splice.get("oneway_relaying", 0) >= 3   # relayed, not only copied
    text = stack.log.read_text()
    codes = [line.split(": ", 1)[1].split()[3] for line in text.splitlines()
             if "tapsplice.httpproxy.access" in line]
    assert codes[:4] == ["TCP_MISS/200", "TCP_MISS/200", "TCP_MISS/200", "TCP_MEM_HIT/200"]


@contextlib.contextmanager
def script_server(lab, script: str, port: int, *args: str):
    """A Python HTTP server ``script`` on 198.19.0.1:``port`` in the server namespace,
    listening when the block starts, stopped after it."""
    proc = subprocess.Popen(ns_cmd(lab.server_ns, sys.executable, "-c", script, str(port),
                                   *args))
    try:
        assert wait_until(ns_cmd(lab.server_ns, "bash", "-c",
                                 f"exec 3<>/dev/tcp/198.19.0.1/{port}"), timeout=20)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


UPLOAD_SINK = """
import hashlib, http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while n:
            chunk = self.rfile.read(min(n, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            n -= len(chunk)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("198.19.0.1", int(sys.argv[1])), Sink).serve_forever()
"""


def test_uploads_on_one_kept_alive_connection_are_spliced_one_way(lab, tmp_path: Path) -> None:
    """Two large POST bodies on one curl connection: each spliced client -> origin by
    the stack (the other direction of docs/splice.md §7), the origin's sha256 of what it
    received equal to the file's."""
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(5 << 20))
    want = hashlib.sha256(upload.read_bytes()).hexdigest()
    stack = StackProcess(lab, "http-proxy", "--connect-port", "443",
                         log=tmp_path / "proxy.log")
    try:
        stack.wait_ready()
        url = "http://198.19.0.1:8000/up"
        with script_server(lab, UPLOAD_SINK, 8000):
            run = curl(lab.client_ns, "--data-binary", f"@{upload}", "-H",
                       "Content-Type: application/octet-stream", "-w", " %{num_connects}\n",
                       url, url)
        assert run.returncode == 0, run.stderr + stack.log.read_text()[-3000:]
        assert run.stdout.split() == [want, "1", want, "0"]   # one connection, both intact
    finally:
        summary = stack.stop()
    splice = summary["splice"]
    assert splice.get("oneway_done", 0) >= 2 and splice.get("oneway_relaying", 0) >= 2, summary
    assert splice.get("copied_payload_bytes", 0) == 0


CLOSE_DELIMITED = """
import hashlib, http.server, sys
BODY = bytes(range(256)) * (int(sys.argv[2]) // 256)
class Old(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"           # no Content-Length: the body ends at close
    def do_GET(self):
        self.send_response(200)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("198.19.0.1", int(sys.argv[1])), Old).serve_forever()
"""


def test_close_delimited_body_spliced_up_to_the_fin(lab, tmp_path: Path) -> None:
    """An HTTP/1.0 origin without Content-Length, a kept-alive HTTP/1.1 client: the body
    is spliced one way up to the origin's FIN, which ends the client connection."""
    size = 3 << 20
    stack = StackProcess(lab, "http-proxy", log=tmp_path / "proxy.log")
    try:
        stack.wait_ready()
        out = tmp_path / "body"
        with script_server(lab, CLOSE_DELIMITED, 8001, str(size)):
            run = curl(lab.client_ns, "-o", str(out), "-w", "%{http_code}",
                       "http://198.19.0.1:8001/x")
        assert run.returncode == 0 and run.stdout == "200", run.stderr
        assert out.read_bytes() == bytes(range(256)) * (size // 256)
    finally:
        summary = stack.stop()
    splice = summary["splice"]
    assert splice.get("oneway_done", 0) == 1 and splice.get("oneway_relaying", 0) == 1, summary
    assert splice.get("copied_payload_bytes", 0) == 0


CHUNKED_ORIGIN = """
import http.server, sys
PAGE = b"<!doctype html><html><body><h1 id=t>chunked page</h1>" + b"<p>filler</p>" * 4000 \\
    + b"</body></html>"
class Chunked(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Cache-Control", "max-age=600")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(PAGE), 7000):
            part = PAGE[i:i + 7000]
            self.wfile.write(b"%x;n=%d\\r\\n%s\\r\\n" % (len(part), i, part))
        self.wfile.write(b"0\\r\\n\\r\\n")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("198.19.0.1", int(sys.argv[1])), Chunked).serve_forever()
"""


def chromium_dom(ns: str, url: str, profile: Path) -> subprocess.CompletedProcess:
    """The DOM headless Chromium renders for ``url`` through the proxy."""
    cmd = ns_cmd(ns, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                 "--no-first-run", "--disable-background-networking",
                 f"--user-data-dir={profile}",
                 "--proxy-server=198.18.0.2:3128", "--proxy-bypass-list=<-loopback>",
                 "--dump-dom", url)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_chunked_response_is_served_from_the_cache_intact(lab, tmp_path: Path) -> None:
    """A chunked response with max-age (what nginx sends when it gzips for proxies):
    the second fetch is a hit whose head matches its body, byte for byte the same
    for curl, and not a blank page for Chromium."""
    stack = StackProcess(lab, "http-proxy", log=tmp_path / "proxy.log")
    url = "http://198.19.0.1:8002/page.html"
    try:
        stack.wait_ready()
        with script_server(lab, CHUNKED_ORIGIN, 8002):
            runs = [curl(lab.client_ns, "-D", str(tmp_path / f"h{i}"), "-o",
                         str(tmp_path / f"b{i}"), url) for i in (1, 2)]
            # tools/setup.sh installs Chromium: a browser is one of the real clients.
            assert shutil.which("chromium"), "chromium is missing: run tools/setup.sh"
            doms = [chromium_dom(lab.client_ns, url, tmp_path / f"chrome{i}")
                    for i in (1, 2)]
        for run in runs:
            assert run.returncode == 0, run.stderr + stack.log.read_text()[-3000:]
    finally:
        stack.stop()
    first, second = ((tmp_path / f"b{i}").read_bytes() for i in (1, 2))
    assert first == second and first.endswith(b"</body></html>") and len(first) > 50_000
    hit_head = (tmp_path / "h2").read_text().lower()
    assert "transfer-encoding" not in hit_head
    assert f"content-length: {len(first)}" in hit_head and "age:" in hit_head
    for dom in doms:
        assert dom.returncode == 0 and "chunked page" in dom.stdout, dom.stderr[-2000:]
    access = [line.split(": ", 1)[1].split() for line in stack.log.read_text().splitlines()
              if "tapsplice.httpproxy.access" in line]
    codes = [f[3] for f in access if f[6] == url]   # Chromium asks for other things too
    assert codes == ["TCP_MISS/200"] + ["TCP_MEM_HIT/200"] * (1 + len(doms)), codes
