"""Both proxies in the lab with their default client policy: curl in the client
namespace gets through; curl in the server namespace (198.19.0.1) is refused at
connect, whether it tries the listening address 198.18.0.2 or the stack's own
address on its side, 198.19.0.2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apps.labproc import ns_cmd
from apps.origin import Origin
from tests.lab.stackproc import StackProcess

pytestmark = pytest.mark.lab

CURL_COULD_NOT_CONNECT = 7


def curl(ns: str, proxy: str, url: str) -> subprocess.CompletedProcess:
    cmd = ns_cmd(ns, "curl", "-sS", "--fail", "--max-time", "20", "-x", proxy,
                 "-o", "/dev/null", url)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("command,scheme,port", [("socks", "socks5h", 1080),
                                                 ("http-proxy", "http", 3128)])
def test_server_side_hosts_cannot_use_the_proxy(lab, tmp_path: Path, command: str,
                                                scheme: str, port: int) -> None:
    stack = StackProcess(lab, command, "--mode", "copy", log=tmp_path / "proxy.log")
    try:
        stack.wait_ready()
        with Origin(lab.server_ns, addr="198.19.0.1") as origin:
            f = origin.make_file("d.bin", 4096, random=True)
            url = f"http://198.19.0.1{f.url_path}"
            ok = curl(lab.client_ns, f"{scheme}://198.18.0.2:{port}", url)
            assert ok.returncode == 0, ok.stderr + stack.log.read_text()
            for addr in ("198.18.0.2", "198.19.0.2"):
                bad = curl(lab.server_ns, f"{scheme}://{addr}:{port}", url)
                assert bad.returncode == CURL_COULD_NOT_CONNECT, (addr, bad.stderr)
    finally:
        counters = stack.stop()
    assert counters["tcp"].get("listen_wrong_iface", 0) >= 1, counters
