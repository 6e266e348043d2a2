"""The splice calls of the packetdrill-subset runner (stack/testing/packetdrill.py).

A script with the option line ``--splice`` gets a second wire (198.19.0.1, peer
198.19.0.2, side ``server``), a :class:`~splice.splicer.Splicer` on the stack under
test and the calls of docs/splice.md §1: ``init_splice(lfd)``,
``intend_splice(cfd, ...) = sfd`` (connects to the server side's peer, port from
``htons(N)`` or 8080) and ``splice(cfd, sfd, n)``; a ``write`` on a spliced client
descriptor writes the owed bytes. A misuse answers ``-1 EINVAL``.
:func:`run_script` is stack.testing's with these calls.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from splice.pair import SpliceError
from splice.splicer import Splicer
from stack.tcp.tcb import Tcb
from stack.testing import packetdrill
from stack.testing.packetdrill import Runner, ScriptResult
from stack.testing.pd_calls import CallExtension, Calls, Fd, Result, UnsupportedCall, port_arg

__all__ = ["SpliceCalls", "SpliceScriptResult", "run_script"]


class SpliceCalls(CallExtension):
    """init_splice, intend_splice and splice, and writes of owed bytes."""

    option = "splice"
    sides = ("server",)
    call_names = ("init_splice", "intend_splice", "splice")

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner)
        self.splicer = Splicer(runner.stack, runner.layer)

    def table(self, calls: Calls) -> dict[str, Callable[[list[str]], Result]]:
        """The three splice calls."""
        return {"init_splice": lambda args: self.init_splice(calls, args),
                "intend_splice": lambda args: self.intend_splice(calls, args),
                "splice": lambda args: self.splice(calls, args)}

    def write(self, tcb: Tcb, n: int, now: float) -> Result | None:
        """A write on a spliced client connection writes owed bytes (§1.3)."""
        if tcb.splice is None:
            return None
        try:
            self.splicer.write_owed(tcb, b"x" * n, now)
        except SpliceError:
            return -1, "EINVAL"
        return n, None

    def counters(self) -> dict[str, int]:
        """The splicer's counters."""
        return dict(self.splicer.counters)

    def init_splice(self, calls: Calls, args: list[str]) -> Result:
        """init_splice(listener fd)."""
        fd = calls.fd_of(args)
        if fd.listener is None:
            return -1, "EINVAL"
        self.splicer.init_splice(fd.listener)
        return 0, None

    def intend_splice(self, calls: Calls, args: list[str]) -> Result:
        """intend_splice(client fd, ...): a new descriptor for the server connection."""
        tcb = calls.tcb_of(args)
        runner = self.runner
        side = runner.sides["server"]
        runner.expect_connection(side)
        try:
            server = self.splicer.intend_splice(
                tcb, side.remote_ip, port_arg(args[1] if len(args) > 1 else ""), runner.now())
        except SpliceError:
            return -1, "EINVAL"
        runner.connected(side, server)
        return calls.new_fd(Fd(tcb=server)), None

    def splice(self, calls: Calls, args: list[str]) -> Result:
        """splice(client fd, server fd, n)."""
        if len(args) < 2:
            raise UnsupportedCall("splice: expected (client fd, server fd, n)")
        client, server = calls.tcb_of(args), calls.tcb_of(args[1:])
        try:
            self.splicer.splice(client, server, calls.count_arg(args, 2), self.runner.now())
        except SpliceError:
            return -1, "EINVAL"
        return 0, None


@dataclass
class SpliceScriptResult(ScriptResult):
    """A passing run; ``splice_counters`` are the splicer's (``--splice`` scripts)."""

    @property
    def splice_counters(self) -> dict[str, int]:
        """The splicer's counters at the end of the run (empty without --splice)."""
        return self.extension_counters.get("splice", {})


def run_script(source: str | os.PathLike[str], **kw: Any) -> SpliceScriptResult:
    """stack.testing's run_script (same arguments) with the splice calls."""
    kw["extensions"] = (SpliceCalls, *kw.get("extensions", ()))
    result = packetdrill.run_script(source, **kw)
    return SpliceScriptResult(**{f.name: getattr(result, f.name)
                                 for f in dataclasses.fields(result)})
