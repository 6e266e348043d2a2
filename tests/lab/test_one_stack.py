"""One stack per TAP (stack/netdev/taplock.py): a second `tapsplice run` on the TAPs
of a running stack exits at once with a one-line error, and the first keeps working;
the workers of one supervisor share the TAPs as before."""

from __future__ import annotations

import subprocess

import pytest

from tests.lab.stackproc import StackProcess, ping

pytestmark = pytest.mark.lab


def _second_is_refused(lab, log) -> str:
    second = StackProcess(lab, "run", log=log)
    try:
        code = second.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        second.proc.kill()
        second.proc.wait(timeout=10)
        raise AssertionError("a second stack attached: " + log.read_text()) from None
    text = log.read_text()
    assert code != 0, text
    lines = text.strip().splitlines()
    assert "Traceback" not in text and "ready" not in lines, text
    assert len(lines) == 1, text
    assert f"TAP {lab.client_tap} in netns {lab.client_ns} already has a stack" in lines[0]
    return lines[0]


def test_a_second_stack_on_the_same_taps_is_refused(lab, tmp_path):
    first = StackProcess(lab, "run", log=tmp_path / "first.log")
    try:
        first.wait_ready()
        line = _second_is_refused(lab, tmp_path / "second.log")
        assert f"(pid {first.proc.pid})" in line
        assert ping(lab.client_ns, "198.18.0.2").returncode == 0
        assert ping(lab.server_ns, "198.19.0.2").returncode == 0  # and on the other TAP
    finally:
        first.stop()
    # Once the first has gone, the TAPs are free again.
    third = StackProcess(lab, "run", log=tmp_path / "third.log")
    try:
        third.wait_ready()
    finally:
        third.stop()


def test_workers_of_one_supervisor_share_the_taps_and_refuse_a_stranger(lab, tmp_path):
    workers = StackProcess(lab, "run", "--workers", "2", log=tmp_path / "workers.log")
    try:
        workers.wait_logged("ready")
        assert len(workers.worker_pids()) == 2
        _second_is_refused(lab, tmp_path / "second.log")
        assert ping(lab.client_ns, "198.18.0.2").returncode == 0
    finally:
        workers.stop()
