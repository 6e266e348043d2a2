"""enter_netns: the calling thread moves into a namespace and back (needs root)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from apps.lab import LabConfig
from stack.netdev.netns import NetnsError, enter_netns


def current_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@pytest.fixture
def netns() -> Iterator[str]:
    name = LabConfig.unique().client_ns  # swept by cleanup_stale if a run crashes
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.mark.lab
def test_enter_and_leave(netns: str) -> None:
    home = current_netns()
    with enter_netns(netns):
        inside = current_netns()
        # A socket made here belongs to the namespace: only its loopback exists.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert socket.if_nameindex() == [(1, "lo")]
    assert inside != home
    assert current_netns() == home
    with s:
        # The socket stays in the namespace after the thread left: lo is down there,
        # so 127.0.0.1 has no route, unlike in the namespace the test runs in.
        with pytest.raises(OSError):
            s.connect(("127.0.0.1", 9))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as here:
        here.connect(("127.0.0.1", 9))


@pytest.mark.lab
def test_leaves_on_error_and_only_moves_this_thread(netns: str) -> None:
    home = current_netns()
    seen: list[str] = []
    go = threading.Event()

    def other() -> None:
        go.wait(10)
        seen.append(current_netns())

    t = threading.Thread(target=other)  # started before the switch: not inherited
    t.start()
    with pytest.raises(RuntimeError):
        with enter_netns(netns):
            go.set()
            t.join(10)
            raise RuntimeError("boom")
    assert current_netns() == home
    assert seen == [home]


@pytest.mark.lab
def test_missing_namespace_is_a_typed_error() -> None:
    home = current_netns()
    with pytest.raises(NetnsError):
        with enter_netns(f"tsx-{os.getpid()}-0-nonexistent"):
            pass
    assert current_netns() == home


@pytest.mark.parametrize("bad", ["", "..", "a/b"])
def test_bad_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        with enter_netns(bad):
            pass
