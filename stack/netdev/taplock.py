"""One stack per TAP device: a lock file per (network namespace, TAP) held with flock.

A lab TAP is a multi_queue device, so a second process opening it does not fail: it
attaches one more queue, and the kernel spreads the frames over both. Two stacks with
two MACs for one address then break each other without a word. So whoever opens a
TAP first takes ``/run/tapsplice/tap-net<inode>-<name>.lock`` (the namespace's inode
names it, however it was entered) with ``flock(LOCK_EX | LOCK_NB)``; another process
is refused with :class:`TapBusyError`.

flock(2) belongs to the open file, not to a path or a pid: it ends when the last
descriptor of that file closes, which a process's death does too, so no crash leaves
a device locked. A forked child inherits the descriptor and so the lock: the workers
of one supervisor (stack/workers.py), which opens every queue before it forks, all
hold the one lock, and it lasts while any of them lives. Within one process every
further open of a locked TAP shares the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

#: Where the lock files live (the control sockets' directory, mode 0700).
LOCK_DIR = Path("/run/tapsplice")
#: Attempts to lock a file that another process unlinked meanwhile.
_ATTEMPTS = 8
#: Stale lock files removed per lock taken, at most.
_SWEEP_MAX = 256


class TapBusyError(OSError):
    """Another process has a stack attached to this TAP."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EBUSY, message)

    def __str__(self) -> str:
        return str(self.strerror)


class TapLock:
    """A held lock on one TAP; :meth:`hold` and :meth:`release` count its users."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.refs = 0
        #: Also held by another process of this tree (forked with it): never unlinked.
        self.shared = False

    def hold(self) -> TapLock:
        """One more user (a device queue) of the lock."""
        self.refs += 1
        return self

    def release(self) -> None:
        """One user less; the last one drops the lock."""
        self.refs -= 1
        if self.refs > 0 or self.fd < 0:
            return
        _held.pop(self.path, None)
        if not self.shared:
            # Unlinked while still locked: a process that opened the old file finds
            # on locking it that the path names another file now, and tries again.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


#: The locks this process holds (inherited by a forked child, as the descriptors are).
_held: dict[Path, TapLock] = {}


def _mark_shared() -> None:
    for lock in _held.values():
        lock.shared = True


os.register_at_fork(after_in_parent=_mark_shared, after_in_child=_mark_shared)


def netns_inode() -> int:
    """The inode of the calling thread's network namespace (its identity)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def lock_tap(name: str, netns: str | None, *, directory: Path = LOCK_DIR,
             inode: int | None = None) -> TapLock:
    """Take (or share, within this process) the lock of TAP ``name`` in the current
    network namespace (``netns`` only names it in messages). TapBusyError when
    another process holds it; OSError when the lock file cannot be made."""
    if not name or "/" in name:
        raise ValueError(f"bad TAP name {name!r}")
    ino = netns_inode() if inode is None else inode
    path = directory / f"tap-net{ino}-{name}.lock"
    lock = _held.get(path)
    if lock is not None:
        return lock
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _sweep(directory)
    where = f" in netns {netns}" if netns else ""
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise TapBusyError(f"TAP {name}{where} already has a stack attached{holder}; "
                               "stop it first (one stack per TAP; use --workers for "
                               "more processes)") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {netns or '-'} {name}\n".encode())
            lock = _held[path] = TapLock(path, fd)
            return lock
        os.close(fd)  # unlinked by its last holder between our open and our flock
    raise TapBusyError(f"TAP {name}{where}: its lock file keeps changing ({path})")


def _sweep(directory: Path) -> None:
    """Remove lock files nobody holds (left by workers, which never unlink, or by a
    killed stack), a bounded number per call; each is unlinked while locked."""
    for path in sorted(directory.glob("tap-net*.lock"))[:_SWEEP_MAX]:
        if path in _held:
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                os.unlink(path)
        except OSError:
            pass  # held: a running stack's
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> str:
    """The holder named by the lock file's first word, as " (pid N)", else ""."""
    try:
        words = os.pread(fd, 64, 0).split()
    except OSError:
        return ""
    return f" (pid {int(words[0])})" if words and words[0].isdigit() else ""
