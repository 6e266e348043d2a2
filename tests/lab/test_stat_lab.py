"""`tapsplice stat` against a stack process in the lab: a kernel client's connection to
the stack's echo service is listed with its 4-tuple and state, and the counters are."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apps.labproc import ns_cmd
from stack.control import default_path, query
from tests.lab.stackproc import StackProcess

pytestmark = pytest.mark.lab

# Connects to the stack's echo service, checks one echo, prints its own port and holds
# the connection open until its stdin closes (bounded by a timeout).
CLIENT = textwrap.dedent("""
    import select, socket, sys
    s = socket.create_connection(("198.18.0.2", 7), timeout=10)
    s.sendall(b"hello")
    got = b""
    while len(got) < 5:
        got += s.recv(5 - len(got))
    assert got == b"hello", got
    print(s.getsockname()[1], flush=True)
    select.select([sys.stdin], [], [], 60)
    s.close()
""")


def _stat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apps.cli", "stat", *args],
                          capture_output=True, text=True, timeout=30)


def test_stat_lists_a_kernel_connection_and_counters(lab, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl.sock"
    stack = StackProcess(lab, "serve", "--control", str(ctl), log=tmp_path / "stack.log")
    client = None
    try:
        stack.wait_ready()
        assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o600
        client = subprocess.Popen(ns_cmd(lab.client_ns, sys.executable, "-c", CLIENT),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        port = int(client.stdout.readline())

        done = _stat("--control", str(ctl), "--json", "--state", "established",
                     "--addr", f"198.18.0.1:{port}")
        assert done.returncode == 0, done.stderr
        snap = json.loads(done.stdout)
        rows = [(r["local"], r["local_port"], r["remote"], r["remote_port"], r["state"])
                for r in snap["connections"]]
        assert rows == [("198.18.0.2", 7, "198.18.0.1", port, "ESTABLISHED")]
        row = snap["connections"][0]
        assert row["bytes_in"] == 5 and row["splice"] is None and row["rto"] > 0
        assert snap["listeners"] == []  # filtered out by --state
        done = _stat("--control", str(ctl), "--json", "--state", "listen")
        listeners = json.loads(done.stdout)["listeners"]
        assert {(lst["local"], lst["local_port"]) for lst in listeners} >= {
            ("198.18.0.2", 7), ("198.19.0.2", 9)}

        table = _stat("--control", str(ctl))
        assert table.returncode == 0, table.stderr
        assert "ESTABLISHED" in table.stdout and f"198.18.0.1:{port}" in table.stdout

        done = _stat("--control", str(ctl), "--json", "--counters")
        assert done.returncode == 0, done.stderr
        counters = json.loads(done.stdout)["counters"]
        assert set(counters["devices"]) == {lab.client_tap, lab.server_tap}
        assert counters["devices"][lab.client_tap]["rx_frames"] > 0
        assert counters["stack"]["rx_arp"] > 0
        assert "198.18.0.1" in {n["ip"] for n in counters["neighbours"]}
        assert counters["copied_payload_bytes"] == 0
        text = _stat("--control", str(ctl), "--counters")
        assert text.returncode == 0 and "drops by reason" in text.stdout
    finally:
        if client is not None:
            client.stdin.close()
            client.wait(timeout=30)
        summary = stack.stop()
    assert summary["connections"] >= 0
    assert not ctl.exists()
    gone = _stat("--control", str(ctl))
    assert gone.returncode == 1 and "no control socket" in gone.stderr


def test_default_control_socket(lab, tmp_path: Path) -> None:
    stack = StackProcess(lab, "run", log=tmp_path / "stack.log")
    path = default_path(stack.proc.pid)
    try:
        stack.wait_ready()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert query(path, {"cmd": "ping"}) == {"pong": stack.proc.pid}
        metrics = query(path, {"cmd": "metrics"})["metrics"]
        assert f'tapsplice_device_events_total{{device="{lab.client_tap}",event="rx_frames"}}' \
            in metrics
    finally:
        stack.stop()
    assert not path.exists()
