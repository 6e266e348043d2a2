"""apps/lab.py: building, inspecting and removing a lab (needs root)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pytest

from apps import lab as labmod
from apps.lab import LabConfig, lab_down, lab_status, lab_up, list_netns, run_in_ns


def test_unique_names_are_short_and_distinct() -> None:
    a, b = LabConfig.unique(), LabConfig.unique("x1")
    names = {a.client_ns, a.server_ns, b.client_ns, b.server_ns}
    assert len(names) == 4
    for cfg in (a, b):
        assert len(cfg.client_tap) <= 15 and len(cfg.server_tap) <= 15
        assert cfg.client_tap != cfg.server_tap
        assert labmod.UNIQUE_NS_RE.match(cfg.client_ns)
        assert labmod.UNIQUE_NS_RE.match(cfg.server_ns)
    assert not labmod.UNIQUE_NS_RE.match(LabConfig().client_ns)  # "tsc" is never swept
    with pytest.raises(ValueError):
        LabConfig.unique("Bad Tag")


def test_cli_parser() -> None:
    parser = argparse.ArgumentParser(prog="tapsplice")
    labmod.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lab", "up", "--mtu", "9000"])
    assert args.mtu == 9000 and callable(args.func)
    args = parser.parse_args(["lab", "status", "--json"])
    assert args.json is True and args.func is not parser.parse_args(["lab", "down"]).func
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "sideways"])


@pytest.mark.lab
def test_up_status_down_are_idempotent() -> None:
    cfg = LabConfig.unique("idem")
    try:
        lab_up(cfg)
        lab_up(cfg)  # a second time changes nothing and does not fail
        st = lab_status(cfg)
        assert st["up"]
        for side, addr, gw in (("client", "198.18.0.1/24", "198.18.0.2"),
                               ("server", "198.19.0.1/24", "198.19.0.2")):
            s = st[side]
            assert s["exists"] and s["tap_exists"]
            assert s["addresses"] == [addr]
            assert s["mtu"] == 1500 and "UP" in s["flags"]
            assert f"default via {gw} dev {s['tap']}" in s["routes"]
        json.dumps(st)  # the status is plain data (for --json)
        out = run_in_ns(cfg.client_ns, "ip", "-o", "addr", "show", "dev", cfg.client_tap,
                        capture_output=True, text=True, check=True).stdout
        assert "198.18.0.1/24" in out
    finally:
        lab_down(cfg)
        lab_down(cfg)
    assert cfg.client_ns not in list_netns() and cfg.server_ns not in list_netns()
    st = lab_status(cfg)
    assert not st["up"] and not st["client"]["exists"] and not st["server"]["exists"]


@pytest.mark.lab
def test_mtu_is_applied(lab: LabConfig) -> None:
    from dataclasses import replace

    bigger = replace(lab, mtu=9000)
    lab_up(bigger)  # re-running up on an existing lab updates it
    assert lab_status(bigger)["client"]["mtu"] == 9000
    assert lab_status(bigger)["server"]["mtu"] == 9000


@pytest.mark.lab
def test_stale_namespaces_of_dead_processes_are_swept() -> None:
    # A pid that cannot be alive: above the kernel's pid_max.
    with open("/proc/sys/kernel/pid_max") as f:
        dead = int(f.read()) + 1
    stale = f"tsx-{dead}-0-c"
    live = f"tsx-{os.getpid()}-999-c"
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=30)
    subprocess.run(["ip", "netns", "add", live], check=True, timeout=30)
    try:
        removed = labmod.cleanup_stale()
        assert stale in removed and live not in removed
        assert stale not in list_netns() and live in list_netns()
    finally:
        for ns in (stale, live):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
