"""Socket calls of the packetdrill runner, mapped onto the sans-I/O TCP API.

Each call returns ``(result, errno name or None)``; the runner compares that with the
script. File descriptors are small integers from 3 up, as in packetdrill scripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.tcp.api import (
    TcpAddressError,
    TcpError,
    TcpRefused,
    TcpReset,
    TcpStateError,
    TcpTimeout,
)
from stack.tcp.layer import Listener
from stack.tcp.tcb import Tcb

if TYPE_CHECKING:
    from stack.testing.packetdrill import Runner

#: Port of a socket bound with ``...`` and of the remote peer of an active open.
DEFAULT_PORT = 8080
#: errno numbers reported through SO_ERROR.
ERRNO = {"ECONNREFUSED": 111, "ECONNRESET": 104, "ETIMEDOUT": 110, "ECONNABORTED": 103,
         "EPIPE": 32}
_NOOP_SOCKOPTS = ("SO_REUSEADDR", "SO_REUSEPORT")
Result = tuple[int, str | None]


class UnsupportedCall(ValueError):
    """A call (or an argument of one) outside the subset."""


class CallExtension:
    """Calls that a layer above TCP adds to the runner, for the scripts that carry its
    option line (``--<option>``); splice/testing/packetdrill.py adds the splice calls
    this way. The runner makes one per run with ``(runner)``."""

    #: The script option that turns the extension on.
    option: str = ""
    #: Sides (wires) it needs besides "client" (the runner knows "server").
    sides: tuple[str, ...] = ()
    #: Its calls (named in the error when a script uses one without the option).
    call_names: tuple[str, ...] = ()

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def table(self, calls: Calls) -> dict[str, Callable[[list[str]], Result]]:
        """Its calls by name."""
        return {}

    def write(self, tcb: Tcb, n: int, now: float) -> Result | None:
        """A ``write`` of ``n`` bytes on ``tcb`` if the extension takes it, else None."""
        return None

    def counters(self) -> dict[str, int]:
        """Its counters at the end of a run (ScriptResult.extension_counters)."""
        return {}


@dataclass(slots=True)
class Fd:
    """What a descriptor of the script refers to."""

    port: int | None = None
    listener: Listener | None = None
    tcb: Tcb | None = None
    nodelay: bool = False


def errno_of(err: BaseException | None) -> str:
    """The errno name a socket would report for a TCP error."""
    if isinstance(err, TcpRefused):
        return "ECONNREFUSED"
    if isinstance(err, TcpReset):
        return "ECONNRESET"
    if isinstance(err, TcpTimeout):
        return "ETIMEDOUT"
    if isinstance(err, TcpStateError):
        return "EPIPE"
    return "ECONNABORTED"


def port_arg(arg: str) -> int:
    """The port of a ``htons(N)`` argument, else 8080."""
    m = re.search(r"htons\((\d+)\)", arg)
    return int(m.group(1)) if m else DEFAULT_PORT


class Calls:
    """The call table of one run."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self.fds: dict[int, Fd] = {}
        self.table: dict[str, Callable[[list[str]], Result]] = {
            "socket": self.socket, "setsockopt": self.setsockopt,
            "getsockopt": self.getsockopt, "fcntl": self.fcntl, "bind": self.bind,
            "listen": self.listen, "accept": self.accept, "connect": self.connect,
            "write": self.write, "send": self.write, "read": self.read, "recv": self.read,
            "shutdown": self.shutdown, "close": self.close,
        }
        for ext in runner.extensions:
            self.table.update(ext.table(self))

    def call(self, name: str, args: list[str]) -> Result:
        """Run one call; UnsupportedCall for anything outside the subset."""
        fn = self.table.get(name)
        if fn is None:
            for ext in self.r.known_extensions:
                if name in ext.call_names:
                    raise UnsupportedCall(f"{name}() and the other {ext.option} calls "
                                          f"need the --{ext.option} option")
            raise UnsupportedCall(f"unsupported in this runner: call {name}()")
        return fn(args)

    # -- helpers ------------------------------------------------------------------
    def new_fd(self, fd: Fd) -> int:
        """The lowest free descriptor number from 3 up, now ``fd``."""
        n = 3
        while n in self.fds:
            n += 1
        self.fds[n] = fd
        return n

    def fd_of(self, args: list[str], i: int = 0) -> Fd:
        """The descriptor of argument ``i`` (UnsupportedCall if it is none)."""
        try:
            return self.fds[int(args[i])]
        except (IndexError, ValueError, KeyError):
            raise UnsupportedCall(f"argument {i + 1}: not an open descriptor") from None

    def tcb_of(self, args: list[str]) -> Tcb:
        """The connection of the first argument's descriptor."""
        tcb = self.fd_of(args).tcb
        if tcb is None:
            raise UnsupportedCall("the descriptor is not a connection")
        return tcb

    @staticmethod
    def count_arg(args: list[str], i: int) -> int:
        """Argument ``i`` as a byte count."""
        try:
            return int(args[i])
        except (IndexError, ValueError):
            raise UnsupportedCall(f"argument {i + 1}: expected a byte count") from None

    # -- sockets ----------------------------------------------------------------------
    def socket(self, args: list[str]) -> Result:
        """A new TCP socket (only SOCK_STREAM)."""
        if len(args) != 3 or args[1] not in ("SOCK_STREAM", "..."):
            raise UnsupportedCall("unsupported in this runner: socket() other than "
                                  "SOCK_STREAM")
        return self.new_fd(Fd()), None

    def setsockopt(self, args: list[str]) -> Result:
        """SO_REUSEADDR/SO_REUSEPORT mean nothing here; TCP_NODELAY is honoured."""
        fd = self.fd_of(args)
        opt = args[2] if len(args) > 2 else ""
        if opt in _NOOP_SOCKOPTS:
            return 0, None
        if opt == "TCP_NODELAY":
            fd.nodelay = args[3].strip("[]") != "0"
            if fd.tcb is not None:
                fd.tcb.set_nodelay(fd.nodelay, self.r.now())
            return 0, None
        raise UnsupportedCall(f"unsupported in this runner: setsockopt {opt}")

    def getsockopt(self, args: list[str]) -> Result:
        """Only SO_ERROR; its value (``[N]``) is checked against the connection."""
        fd = self.fd_of(args)
        if len(args) < 4 or args[2] != "SO_ERROR":
            raise UnsupportedCall("unsupported in this runner: getsockopt other than "
                                  "SO_ERROR")
        err = fd.tcb.error if fd.tcb is not None else None
        got = ERRNO[errno_of(err)] if err is not None else 0
        want = args[3].strip("[]")
        if want != "..." and int(want) != got:
            self.r.fail_call(f"SO_ERROR is {got}, the script expects {want}")
        return 0, None

    def fcntl(self, args: list[str]) -> Result:
        """F_SETFL is accepted: every call here is already non-blocking."""
        if len(args) < 2 or args[1] != "F_SETFL":
            raise UnsupportedCall("unsupported in this runner: fcntl other than F_SETFL")
        self.fd_of(args)
        return 0, None

    def bind(self, args: list[str]) -> Result:
        """Bind to the stack's address; the port from ``htons(N)`` or 8080."""
        fd = self.fd_of(args)
        fd.port = port_arg(args[1] if len(args) > 1 else "")
        return 0, None

    def listen(self, args: list[str]) -> Result:
        """Passive open on the bound port."""
        fd = self.fd_of(args)
        try:
            backlog = int(args[1])
        except (IndexError, ValueError):
            raise UnsupportedCall("listen: expected a backlog number") from None
        side = self.r.sides["client"]
        try:
            fd.listener = self.r.layer.listen(side.local_ip, fd.port or DEFAULT_PORT, backlog)
        except TcpAddressError:
            return -1, "EADDRINUSE"
        self.r.listening(side, fd.listener.port)
        return 0, None

    def accept(self, args: list[str]) -> Result:
        """An established connection from the accept queue, or EAGAIN."""
        fd = self.fd_of(args)
        if fd.listener is None:
            return -1, "EINVAL"
        tcb = fd.listener.accept()
        if tcb is None:
            return -1, "EAGAIN"
        if fd.nodelay:
            tcb.set_nodelay(True, self.r.now())
        return self.new_fd(Fd(tcb=tcb, nodelay=fd.nodelay)), None

    def connect(self, args: list[str]) -> Result:
        """Active open to the remote peer (port from ``htons(N)`` or 8080)."""
        fd = self.fd_of(args)
        side = self.r.sides["client"]
        port = port_arg(args[1] if len(args) > 1 else "")
        nodelay = fd.nodelay
        self.r.expect_connection(side)
        try:
            fd.tcb = self.r.layer.connect(side.remote_ip, port, self.r.now(), src=side.local_ip,
                                          sport=fd.port,
                                          setup=lambda t: setattr(t, "nodelay", nodelay))
        except TcpAddressError:
            return -1, "EADDRNOTAVAIL"
        self.r.connected(side, fd.tcb)
        return -1, "EINPROGRESS"

    # -- data -------------------------------------------------------------------------
    def write(self, args: list[str]) -> Result:
        """Queue N bytes (all 'x'); short counts when the send buffer is full."""
        tcb = self.tcb_of(args)
        n = self.count_arg(args, 2)
        now = self.r.now()
        for ext in self.r.extensions:
            handled = ext.write(tcb, n, now)
            if handled is not None:
                return handled
        try:
            taken = tcb.send(b"x" * n, now)
        except TcpStateError:
            return -1, "EPIPE"
        except TcpError as e:
            return -1, errno_of(e)
        return (taken, None) if taken or not n else (-1, "EAGAIN")

    def read(self, args: list[str]) -> Result:
        """Take up to N bytes: their count, 0 at end of stream, or EAGAIN."""
        tcb = self.tcb_of(args)
        n = self.count_arg(args, 2)
        if tcb.recv_available():
            return len(tcb.recv(n)), None
        if tcb.error is not None:
            return -1, errno_of(tcb.error)
        if tcb.eof_received:
            return 0, None
        return -1, "EAGAIN"

    def shutdown(self, args: list[str]) -> Result:
        """SHUT_WR and SHUT_RDWR send our FIN; SHUT_RD changes nothing on the wire."""
        tcb = self.tcb_of(args)
        how = args[1] if len(args) > 1 else ""
        if how not in ("SHUT_WR", "SHUT_RD", "SHUT_RDWR"):
            raise UnsupportedCall(f"shutdown: unknown how {how!r}")
        if how != "SHUT_RD":
            tcb.shutdown_write(self.r.now())
        return 0, None

    def close(self, args: list[str]) -> Result:
        """Close a socket, listener or connection (a spliced one is only released)."""
        fd = self.fd_of(args)
        del self.fds[int(args[0])]
        now = self.r.now()
        if fd.listener is not None:
            fd.listener.close(now)
        if fd.tcb is not None and fd.tcb.splice is None:
            fd.tcb.close(now)
        return 0, None
