"""Real clients on cache hits through `tapsplice http-proxy --lab`: curl, wget and
Python's http.client against an nginx that gzips for proxies (chunked, weak ETags),
for whole, gzip'd, ranged (`curl -r`, `curl -C -`) and conditional (`wget -N`,
If-None-Match) fetches; every answer checked byte for byte and every hit seen in the
proxy's access log, with nginx's own log saying what reached the origin."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.labproc import ns_cmd, stop_process, wait_until
from tests.lab.stackproc import StackProcess

pytestmark = pytest.mark.lab

PROXY = "http://198.18.0.2:3128"
ORIGIN = "http://198.19.0.1"
TEXT = b"".join(b"line %06d of a text that gzips well\n" % i for i in range(4000))


def nginx_conf(tmp: Path, root: Path) -> str:
    """nginx gzipping text for proxies (gzip_proxied any): chunked, weak ETags."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"{user}worker_processes 1;\npid {tmp / 'nginx.pid'};\n"
            f"error_log {tmp / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
            "http {\n"
            "    log_format origin '$request_method $uri $status';\n"
            f"    access_log {tmp / 'access.log'} origin;\n"
            "    types { text/plain txt; text/html html; text/css css;\n"
            "            application/javascript js; }\n"
            "    default_type application/octet-stream;\n"
            "    gzip on; gzip_proxied any; gzip_min_length 0;\n"
            "    gzip_types text/plain text/css application/javascript;\n"
            "    gzip_vary on;\n"
            f"{temp}"
            "    server {\n        listen 198.19.0.1:80;\n"
            f"        root {root};\n"
            "        location / { expires 1h; }\n"
            "        location /reval/ { add_header Cache-Control no-cache; }\n"
            "    }\n}\n")


@contextlib.contextmanager
def gzip_origin(lab, tmp: Path) -> Iterator[Path]:
    """nginx in the server namespace; yields the path of its access log."""
    root = tmp / "www"
    (root / "reval").mkdir(parents=True)
    _page_of_resources(root)
    (root / "page.txt").write_bytes(TEXT)
    (root / "reval" / "page.txt").write_bytes(TEXT)
    (root / "data.bin").write_bytes(DATA)
    day_ago = time.time() - 86400
    for path in (root / "data.bin", root / "page.txt"):
        os.utime(path, (day_ago, day_ago))
    tmp.chmod(0o755)
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, root))
    proc = subprocess.Popen(ns_cmd(lab.server_ns, "nginx", "-p", str(tmp), "-e",
                                   str(tmp / "error.log"), "-c", str(conf), "-g",
                                   "daemon off;"), stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_until(ns_cmd(lab.server_ns, "bash", "-c",
                                 "exec 3<>/dev/tcp/198.19.0.1/80"), timeout=20)
        yield tmp / "access.log"
    finally:
        stop_process(proc)


DATA = hashlib.shake_256(b"tapsplice cache").digest(1 << 20)
#: The browser page: this many scripts and as many stylesheets (30 resources).
HALF = 15


def _page_of_resources(root: Path) -> None:
    """/site/index.html with HALF stylesheets and HALF scripts; each script and the
    last one's check of every stylesheet's rule leave a mark in the DOM."""
    site = root / "site"
    site.mkdir()
    filler = "/* " + "padding that gzips " * 200 + " */\n"
    links, scripts = [], []
    for i in range(HALF):
        (site / f"s{i}.css").write_text(f"{filler}#c{i} {{ width: {i + 1}px; }}\n")
        (site / f"j{i}.js").write_text(
            f"{filler}document.body.insertAdjacentHTML('beforeend', '<p>js-ok-{i}</p>');\n")
        links.append(f'<link rel="stylesheet" href="s{i}.css">')
        scripts.append(f'<script src="j{i}.js"></script>')
    check = ("<script>for (let i = 0; i < HALF; i++) { const w = getComputedStyle("
             "document.getElementById('c' + i)).width; if (w === (i + 1) + 'px') "
             "document.body.insertAdjacentHTML('beforeend', '<p>css-ok-' + i + '</p>'); }"
             "</script>").replace("HALF", str(HALF))
    divs = "".join(f'<div id="c{i}"></div>' for i in range(HALF))
    (site / "index.html").write_text(
        "<!doctype html><html><head><link rel=icon href=data:,>" + "".join(links)
        + "</head><body>" + divs + "".join(scripts) + check + "</body></html>")


def chromium(ns: str, url: str, profile: Path, netlog: Path) -> subprocess.CompletedProcess:
    """The DOM headless Chromium renders for ``url`` through the proxy; its net log
    in ``netlog`` (what failed, when something does)."""
    cmd = ns_cmd(ns, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                 "--no-first-run", "--disable-background-networking",
                 f"--user-data-dir={profile}", f"--log-net-log={netlog}",
                 "--proxy-server=198.18.0.2:3128", "--proxy-bypass-list=<-loopback>",
                 "--dump-dom", url)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def curl(ns: str, *args: str) -> subprocess.CompletedProcess:
    cmd = ns_cmd(ns, "curl", "-sS", "--max-time", "60", "-x", PROXY, *args)
    return subprocess.run(cmd, capture_output=True, timeout=70)


HTTP_CLIENT = """
import http.client, json, sys
url, etag = sys.argv[1], sys.argv[2]
out = []
for fields in ({}, {"If-None-Match": etag}, {"If-None-Match": '"other"'}):
    c = http.client.HTTPConnection("198.18.0.2", 3128, timeout=60)
    c.request("GET", url, headers=fields)
    r = c.getresponse()
    body = r.read()
    out.append([r.status, r.getheader("ETag"), r.getheader("Age"), len(body)])
    c.close()
print(json.dumps(out))
"""


def access(text: str) -> list[tuple[str, str, str]]:
    """(code/status, method, URL) of each access-log line."""
    lines = [line.split(": ", 1)[1].split() for line in text.splitlines()
             if "tapsplice.httpproxy.access" in line]
    return [(f[3], f[5], f[6]) for f in lines]


def test_curl_wget_and_http_client_on_hits(lab, tmp_path: Path) -> None:
    stack = StackProcess(lab, "http-proxy", log=tmp_path / "proxy.log")
    data, page, reval = (f"{ORIGIN}/data.bin", f"{ORIGIN}/page.txt",
                         f"{ORIGIN}/reval/page.txt")
    try:
        stack.wait_ready()
        with gzip_origin(lab, tmp_path / "origin") as origin_log:
            _whole_and_gzip(lab, tmp_path, data, page)
            _ranges(lab, tmp_path, data)
            _conditionals(lab, tmp_path, data, page)
            _revalidated_gzip(lab, tmp_path, reval)
            origin_requests = origin_log.read_text().split("\n")
    finally:
        stack.stop()
    log = access(stack.log.read_text())
    # What reached nginx: one GET per object and Accept-Encoding variant, and the
    # revalidations of /reval/ (each a 304, then the full response fetched again).
    got = [line for line in origin_requests if line]
    assert got.count("GET /data.bin 200") == 1, got
    assert got.count("GET /page.txt 200") == 2, got   # two Accept-Encoding variants
    misses = [c for c, _m, u in log if u in (data, page) and "HIT" not in c]
    assert misses == ["TCP_MISS/200"] * 3, log
    assert ("TCP_MEM_HIT/206", "GET", data) in log and ("TCP_MEM_HIT/304", "GET", data) in log
    assert ("TCP_MEM_HIT/304", "GET", page) in log
    assert all(c.split("/")[1] != "000" for c, _m, _u in log), log


def _whole_and_gzip(lab, tmp: Path, data: str, page: str) -> None:
    """A miss then a hit, for a binary file and for gzip'd chunked text."""
    for i in (1, 2):
        run = curl(lab.client_ns, "-D", str(tmp / f"dh{i}"), "-o", str(tmp / f"d{i}"), data)
        assert run.returncode == 0, run.stderr
        assert (tmp / f"d{i}").read_bytes() == DATA
    assert "age:" in (tmp / "dh2").read_text().lower()
    for i in (1, 2):   # raw gzip bytes (no --compressed): the stored body is nginx's
        run = curl(lab.client_ns, "-H", "Accept-Encoding: gzip", "-D", str(tmp / f"gh{i}"),
                   "-o", str(tmp / f"g{i}"), page)
        assert run.returncode == 0, run.stderr
        assert gzip.decompress((tmp / f"g{i}").read_bytes()) == TEXT
    assert (tmp / "g1").read_bytes() == (tmp / "g2").read_bytes()
    first, hit = ((tmp / f"gh{i}").read_text().lower() for i in (1, 2))
    assert "transfer-encoding: chunked" in first and "content-encoding: gzip" in first
    assert "age:" in hit and "content-encoding: gzip" in hit
    assert f"content-length: {(tmp / 'g2').stat().st_size}" in hit
    run = curl(lab.client_ns, "--compressed", page)
    assert run.returncode == 0 and run.stdout == TEXT, run.stderr


def _ranges(lab, tmp: Path, data: str) -> None:
    """curl -r (one range, two ranges) and curl -C - (resume) on a hit."""
    run = curl(lab.client_ns, "-r", "1000-1999", "-w", "%{http_code}", "-o",
               str(tmp / "r1"), data)
    assert run.stdout == b"206" and (tmp / "r1").read_bytes() == DATA[1000:2000]
    run = curl(lab.client_ns, "-r", "0-9,500000-500009", "-D", str(tmp / "rh2"), data)
    assert run.returncode == 0
    assert "multipart/byteranges" in (tmp / "rh2").read_text()
    assert DATA[:10] in run.stdout and DATA[500000:500010] in run.stdout
    assert b"Content-Range: bytes 500000-500009/1048576" in run.stdout
    part = tmp / "resumed"
    part.write_bytes(DATA[:300_000])
    run = curl(lab.client_ns, "-C", "-", "-o", str(part), data)
    assert run.returncode == 0, run.stderr
    assert part.read_bytes() == DATA
    run = curl(lab.client_ns, "-r", "2000000-", "-w", "%{http_code}", "-o", "/dev/null", data)
    assert run.stdout == b"416"


def _conditionals(lab, tmp: Path, data: str, page: str) -> None:
    """wget -N (If-Modified-Since) and Python's http.client (If-None-Match)."""
    where = tmp / "wget"
    where.mkdir()
    env = ["env", f"http_proxy={PROXY}"]
    for _ in (1, 2):   # the first stores the file, the second is told "not modified"
        run = subprocess.run(ns_cmd(lab.client_ns, *env, "wget", "-N", "-S", "-P",
                                    str(where), data), capture_output=True, text=True,
                             timeout=70)
        assert run.returncode == 0, run.stderr
    assert (where / "data.bin").read_bytes() == DATA
    assert "HTTP/1.1 304 Not Modified" in run.stderr, run.stderr
    head = (tmp / "dh1").read_text()
    etag = next(line.split(":", 1)[1].strip() for line in head.splitlines()
                if line.lower().startswith("etag:"))
    run = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", HTTP_CLIENT, data,
                                etag), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (full, nm, other) = json.loads(run.stdout)
    assert full[0] == 200 and full[3] == len(DATA) and full[2] is not None
    assert nm[0] == 304 and nm[1] == etag and nm[3] == 0     # the ETag as nginx sent it
    assert other[0] == 200 and other[3] == len(DATA)
    run = curl(lab.client_ns, "-H", "Accept-Encoding: gzip", "-D", str(tmp / "gh1x"),
               "-o", "/dev/null", page)
    weak = next(line.split(":", 1)[1].strip()
                for line in (tmp / "gh1x").read_text().splitlines()
                if line.lower().startswith("etag:"))
    assert weak.startswith("W/")
    run = curl(lab.client_ns, "-H", "Accept-Encoding: gzip", "-H", f"If-None-Match: {weak}",
               "-w", "%{http_code}", "-o", "/dev/null", page)
    assert run.stdout == b"304"


def _revalidated_gzip(lab, tmp: Path, reval: str) -> None:
    """no-cache text gzip'd by nginx: every fetch revalidates; whatever nginx's 304
    says, curl always gets the whole body (never the proxy's own 304)."""
    for i in (1, 2, 3):
        run = curl(lab.client_ns, "--compressed", "-w", "\n%{http_code}", reval)
        assert run.returncode == 0, run.stderr
        body, _nl, code = run.stdout.rpartition(b"\n")
        assert (code, body) == (b"200", TEXT), i


def test_chromium_loads_a_page_of_30_resources_twice_the_second_time_from_the_cache(
        lab, tmp_path: Path) -> None:
    """Headless Chromium, a fresh profile each time (its own cache empty), loads a page
    with 15 stylesheets and 15 scripts that nginx gzips for proxies (chunked, weak
    ETags): every resource applied both times, the second time all of them hits."""
    stack = StackProcess(lab, "http-proxy", log=tmp_path / "proxy.log")
    url = f"{ORIGIN}/site/index.html"
    try:
        stack.wait_ready()
        # Chromium drops its requests in flight (ERR_NETWORK_CHANGED) when an address
        # of its namespace changes: the IPv6 link-local address leaving its tentative
        # state (duplicate address detection) must be over before it starts.
        assert wait_until(ns_cmd(lab.client_ns, "bash", "-c",
                                 'test -z "$(ip -6 addr show tentative)"'), timeout=20)
        with gzip_origin(lab, tmp_path / "origin") as origin_log:
            doms = [chromium(lab.client_ns, url, tmp_path / f"profile{i}",
                             tmp_path / f"net{i}.json") for i in (1, 2)]
            origin_requests = [line for line in origin_log.read_text().split("\n") if line]
    finally:
        stack.stop()
    for dom in doms:
        assert dom.returncode == 0, dom.stderr[-2000:]
        for i in range(HALF):
            assert f"js-ok-{i}<" in dom.stdout and f"css-ok-{i}<" in dom.stdout, i
    names = ["index.html"] + [f"s{i}.css" for i in range(HALF)] + \
        [f"j{i}.js" for i in range(HALF)]
    log = access(stack.log.read_text())
    for name in names:
        codes = [c for c, _m, u in log if u == f"{ORIGIN}/site/{name}"]
        assert codes == ["TCP_MISS/200", "TCP_MEM_HIT/200"], (name, log)
        assert origin_requests.count(f"GET /site/{name} 200") == 1, origin_requests
