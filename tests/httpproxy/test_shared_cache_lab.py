"""`tapsplice http-proxy --workers 2 --cache-dir DIR` in the lab: an object that one
worker fetched and stored is a hit for the other worker, and nginx sees one request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from apps import origin as origin_module
from apps.labproc import ns_cmd
from apps.origin import Origin
from tests.lab.stackproc import StackProcess

pytestmark = pytest.mark.lab

#: Fresh connections at most; the client's source ports spread them over both workers
#: (the chance that they all land on one worker is 2**-15).
FETCHES = 16
REPO = Path(__file__).resolve().parents[2]

#: In the client namespace: fresh connections, each kept open until both workers
#: answered, and for each the worker holding it (asked on the workers' control sockets
#: while it is ESTABLISHED), whether the answer carried Age (a hit) and its sha256.
CLIENT = textwrap.dedent(r"""
    import contextlib, hashlib, json, socket, sqlite3, sys, time
    from stack.control import query
    controls, url, fetches, index = sys.argv[1:3], sys.argv[3], int(sys.argv[4]), sys.argv[5]

    def wait_stored():
        # Until the row of the miss is committed (by the worker's writer thread).
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.closing(sqlite3.connect(index)) as db:
                if db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]:
                    return
            time.sleep(0.01)  # poll interval while the row is written
        raise SystemExit("the object was never stored")

    def more(s):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"connection closed early: {seen}")
        return chunk

    held, seen = [], []
    for i in range(fetches):
        s = socket.create_connection(("198.18.0.2", 3128), timeout=20)
        held.append(s)
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: 198.19.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += more(s)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        while len(body) < int(fields["content-length"]):
            body += more(s)
        port = s.getsockname()[1]
        owners = [w for w, c in enumerate(controls)
                  if query(c, {"cmd": "snapshot", "state": "ESTABLISHED", "port": port}
                           )["connections_matched"]]
        seen.append({"workers": owners, "hit": "age" in fields, "status": lines[0].split()[1],
                     "sha256": hashlib.sha256(body).hexdigest()})
        if i == 0:
            wait_stored()
        if {tuple(x["workers"]) for x in seen} == {(0,), (1,)}:
            break
    for s in held:
        s.close()
    print(json.dumps(seen))
""")



def logging_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Origins started from now on write an nginx access log, ``access.log`` in their
    temporary directory (apps/origin.py turns it off for benchmarks)."""
    plain = origin_module._nginx_conf

    def conf(tmp: Path, docroot: Path, addr: str, port: int) -> str:
        return plain(tmp, docroot, addr, port).replace(
            "access_log off;", f"access_log {tmp / 'access.log'};")

    monkeypatch.setattr(origin_module, "_nginx_conf", conf)


def access_codes(log_text: str) -> list[str]:
    """The result codes (``TCP_HIT/200``...) of the proxy's access log lines."""
    return [line.split(": ", 1)[1].split()[3] for line in log_text.splitlines()
            if "tapsplice.httpproxy.access" in line]


def test_an_object_stored_by_one_worker_is_a_hit_for_the_other(lab, tmp_path: Path,
                                                               monkeypatch) -> None:
    logging_origin(monkeypatch)
    cache, control = tmp_path / "cache", tmp_path / "ctl"
    stack = StackProcess(lab, "http-proxy", "--workers", "2", "--cache-dir", str(cache),
                         "--control", str(control), log=tmp_path / "workers.log")
    try:
        stack.wait_logged("ready")
        with Origin(lab.server_ns, addr="198.19.0.1") as origin:
            f = origin.make_file("shared.bin", 200_000, random=True)
            day_ago = time.time() - 86400   # heuristic freshness of hours (RFC 9111 §4.2.2)
            os.utime(f.path, (day_ago, day_ago))
            out = subprocess.run(
                ns_cmd(lab.client_ns, sys.executable, "-c", CLIENT, str(control),
                       f"{control}.1", origin.url(f), str(FETCHES),
                       str(cache / "cache.sqlite3")),
                cwd=REPO, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr + stack.log.read_text()[-2000:]
            assert origin._tmp is not None
            origin_lines = (origin._tmp / "access.log").read_text().splitlines()
    finally:
        stack.stop()
    seen = json.loads(out.stdout)
    assert all(x["status"] == "200" and x["sha256"] == f.sha256 for x in seen), seen
    assert all(len(x["workers"]) == 1 for x in seen), seen
    first, *rest = seen
    # The first fetch is the miss; every later one a hit, also on the other worker,
    # whose memory cache started empty: it answered from the store the first filled.
    assert not first["hit"] and rest and all(x["hit"] for x in rest), seen
    assert any(x["workers"] != first["workers"] for x in rest), seen
    assert len(origin_lines) == 1 and '"GET /shared.bin ' in origin_lines[0], origin_lines
    codes = access_codes(stack.log.read_text())
    assert codes == ["TCP_MISS/200"] + ["TCP_HIT/200"] * len(rest), codes
    names = sorted(p.name for p in cache.iterdir())
    assert len([n for n in names if n.endswith(".entry")]) == 1, names
    assert "cache.sqlite3" in names and not any(n.startswith("worker") for n in names)
