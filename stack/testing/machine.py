"""A hypothesis state machine for one TCP conversation over a faulty simulated link.

:class:`TcpConversation` sets up two hosts (client 198.18.0.1, server 198.18.0.2)
joined by a :class:`~stack.netdev.memory.MemoryLink` whose two directions get drawn
:class:`~stack.netdev.faults.FaultModel` s, opens one connection, and then lets
hypothesis interleave writes, reads, half-closes and the passing of virtual time on
either side. The invariant is TCP's promise: what each side has read is a prefix of
what the other side wrote, and at the end (both sides half-close, the network runs
until quiet) exactly all of it. Subclass it to add rules or invariants, or override
:meth:`TcpConversation.make_layer` to test another configuration.

Every run is captured in memory; when a run fails, its frames are written to
``<artifacts>/<ClassName>.pcap`` where ``<artifacts>`` is the class's
``artifacts_dir`` or $TAPSPLICE_TEST_ARTIFACTS or ``test-artifacts/`` in the working
directory. Hypothesis replays the minimal failing example last, so the file left is
the capture of the shrunk example.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from stack.core import Stack
from stack.netdev.faults import FaultModel
from stack.sim import SimNetwork
from stack.tcp.api import TcpConfig, TcpState
from stack.tcp.layer import TcpLayer
from stack.tcp.tcb import Tcb
from stack.testing.capture import MemoryCapture, artifacts_dir
from stack.testing.strategies import AppAction, app_scripts, fault_models
from stack.wire.ipv4 import IPPROTO_TCP, ip_bytes

__all__ = ["TcpConversation", "Endpoint"]

CLIENT_ADDR, SERVER_ADDR, PORT = "198.18.0.1", "198.18.0.2", 80
_OPEN = (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)


class Endpoint:
    """One end of the conversation: its connection and the bytes written and read."""

    def __init__(self, name: str, tcb: Tcb) -> None:
        self.name = name
        self.tcb = tcb
        self.sent = bytearray()
        self.got = bytearray()
        self.shut = False
        self.counter = 0

    def pattern(self, n: int) -> bytes:
        """``n`` bytes that differ from write to write (so a misplaced byte shows)."""
        self.counter += 1
        base = (self.counter * 37 + (7 if self.name == "client" else 0)) & 0xFF
        return bytes((base + i) & 0xFF for i in range(n))


class TcpConversation(RuleBasedStateMachine):
    """A client and a server connection driven by random application steps."""

    #: TcpConfig of both hosts (None: defaults).
    config: ClassVar[TcpConfig | None] = None
    #: Where a failing run writes its pcap (None: see the module docstring).
    artifacts_dir: ClassVar[str | None] = None
    #: Virtual seconds allowed for the final drain.
    settle_time: ClassVar[float] = 900.0
    #: The pcap written by the latest failing run of this class.
    last_pcap: ClassVar[Path | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.capture = MemoryCapture()
        self._exc_before = sys.exc_info()[1]
        self.net: SimNetwork | None = None
        self.ends: list[Endpoint] = []

    # -- set-up ---------------------------------------------------------------------
    def make_layer(self, name: str, stack: Stack) -> TcpLayer:
        """The TCP layer of host ``name`` ("client" or "server"); override to inject
        a different configuration or a wrapped layer."""
        layer = TcpLayer(stack, config=self.config, rng=stack.rng)
        stack.register_protocol(IPPROTO_TCP, layer)
        return layer

    # No corruption by default: the simulated link corrupts ARP frames too, which carry
    # no checksum, and a poisoned neighbour entry cuts the path for a minute (a real
    # Ethernet drops such frames on their FCS). Override to draw other models.
    @initialize(seed=st.integers(0, 2 ** 16), to_server=fault_models(max_corrupt=0.0),
                to_client=fault_models(max_corrupt=0.0))
    def open_connection(self, seed: int, to_server: FaultModel,
                        to_client: FaultModel) -> None:
        """Build the network and establish the connection (bounded in virtual time)."""
        net = self.net = SimNetwork(seed, pcap=self.capture)
        c, s = net.add_host("client"), net.add_host("server")
        net.connect(c, f"{CLIENT_ADDR}/24", s, f"{SERVER_ADDR}/24", a_to_b=to_server,
                    b_to_a=to_client)
        self.client_layer = self.make_layer("client", c)
        self.server_layer = self.make_layer("server", s)
        accepted: list[Tcb] = []
        lst = self.server_layer.listen(ip_bytes(SERVER_ADDR), PORT)
        lst.on_accept = accepted.append
        net.start()
        tcb = self.client_layer.connect(ip_bytes(SERVER_ADDR), PORT, net.now)
        net.flush()
        up = net.run_until(lambda: bool(accepted) and tcb.state is not TcpState.SYN_SENT,
                           timeout=300.0)
        assert up and tcb.state in _OPEN, f"no connection: {tcb!r}"
        self.ends = [Endpoint("client", tcb), Endpoint("server", accepted[0])]

    def _net(self) -> SimNetwork:
        assert self.net is not None, "the network is built by open_connection, which runs first"
        return self.net

    # -- rules ----------------------------------------------------------------------------
    @rule(who=st.integers(0, 1), n=st.integers(1, 100_000))
    def write(self, who: int, n: int) -> None:
        """Write ``n`` bytes on one side (what the send buffer takes is recorded)."""
        end = self.ends[who]
        if end.shut or end.tcb.state not in _OPEN:
            return
        data = end.pattern(n)
        taken = end.tcb.send(data, self._net().now)
        assert 0 <= taken <= n
        end.sent += data[:taken]
        self._net().flush()

    @rule(who=st.integers(0, 1), n=st.integers(1, 1 << 20))
    def read(self, who: int, n: int) -> None:
        """Read up to ``n`` bytes on one side."""
        got = self.ends[who].tcb.recv(n)
        assert len(got) <= n
        self.ends[who].got += got
        self._net().flush()

    @rule(who=st.integers(0, 1))
    def shutdown(self, who: int) -> None:
        """Half-close one side."""
        end = self.ends[who]
        if not end.shut:
            end.shut = True
            end.tcb.shutdown_write(self._net().now)
            self._net().flush()

    @rule(who=st.integers(0, 1), steps=app_scripts(max_steps=5, max_write=50_000))
    def play(self, who: int, steps: tuple[AppAction, ...]) -> None:
        """Run a short application script on one side; "close" acts as a half-close
        here (a close with unread data would reset, which the invariant forbids)."""
        for step in steps:
            if step.kind == "write":
                self.write(who, step.n)
            elif step.kind == "read":
                self.read(who, step.n)
            elif step.kind == "wait":
                self.advance(step.n / 1000.0)
            else:
                self.shutdown(who)

    @rule(dt=st.floats(0.0005, 3.0))
    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds of virtual time pass."""
        self._net().run(dt)

    @invariant()
    def read_is_a_prefix_of_written(self) -> None:
        """Each side has read a prefix of what the other side wrote (RFC 9293 §1)."""
        for a, b in ((0, 1), (1, 0)):
            got, sent = self.ends[a].got, self.ends[b].sent
            assert got == sent[:len(got)], (
                f"{self.ends[a].name} read bytes the {self.ends[b].name} did not write "
                f"(first difference at {_first_difference(got, sent)})")

    # -- the end ---------------------------------------------------------------------------
    def finish(self) -> None:
        """Both sides half-close; run until both have read everything and the end of
        stream, then check every byte arrived."""
        for end in self.ends:
            if not end.shut:
                self.shutdown(self.ends.index(end))

        def drained() -> bool:
            for end in self.ends:
                end.got += end.tcb.recv()
            return all(e.tcb.eof_received or e.tcb.error for e in self.ends)

        done = self._net().run_until(drained, timeout=self.settle_time)
        for a, b in ((0, 1), (1, 0)):
            ra, sb = self.ends[a], self.ends[b]
            assert ra.tcb.error is None, f"{ra.name} failed: {ra.tcb.error!r}"
            assert ra.got == sb.sent, (
                f"{ra.name} read {len(ra.got)} of {len(sb.sent)} bytes, first difference "
                f"at {_first_difference(ra.got, sb.sent)}")
        assert done, "the connection did not drain within the settle time"

    def teardown(self) -> None:
        """Final check of a clean run; the pcap of a failed one.

        An exception on its way out means the run ended early: a failure of a rule or
        invariant (saved), or hypothesis's own control flow (an example cut short,
        an unmet assumption), which is no failure and leaves nothing behind.
        """
        exc = sys.exc_info()[1]
        if exc is not None and exc is not self._exc_before:
            if isinstance(exc, Exception) and not isinstance(exc, HypothesisException):
                self.save_pcap()
            return
        if not self.ends:
            return
        try:
            self.finish()
        except BaseException:
            self.save_pcap()
            raise

    def save_pcap(self) -> Path:
        """Write this run's capture to the artifacts directory; return its path."""
        root = Path(self.artifacts_dir) if self.artifacts_dir else artifacts_dir()
        path = self.capture.write(root / f"{type(self).__name__}.pcap")
        type(self).last_pcap = path
        return path


def _first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
