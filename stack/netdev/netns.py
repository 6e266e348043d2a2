"""Entering a network namespace for the calling thread (setns(2) through ctypes).

A file descriptor opened inside a namespace (a TAP, a socket) keeps working after
the thread returns to its own namespace, which is how the stack attaches to the
lab's TAP devices without living in either namespace.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

#: setns(2) nstype for network namespaces (linux/sched.h).
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


class NetnsError(OSError):
    """A namespace could not be entered or left."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"setns: {os.strerror(err)}")


def netns_path(name: str) -> str:
    """The bind-mount path iproute2 uses for the named namespace."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


@contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace ``name``.

    The original namespace is taken from /proc/thread-self/ns/net before switching
    and restored on exit, also when the body raises. Only this thread moves.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NetnsError(exc.errno, f"no network namespace {name!r}") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
