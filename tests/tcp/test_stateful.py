"""Hypothesis state machine: random writes, reads and half-closes over a faulty link.

Invariant: each side receives exactly the bytes the other sent, in order; queues
stay within their bounds; at the end both connections reach CLOSED or TIME-WAIT
within a bounded virtual time.
"""

from __future__ import annotations

import os
import tempfile

from harness import B, Net
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from stack.tcp.api import TcpConfig, TcpState

S = TcpState
DONE = (S.CLOSED, S.TIME_WAIT)


class Side:
    def __init__(self, tcb) -> None:
        self.tcb = tcb
        self.sent = bytearray()
        self.got = bytearray()
        self.shut = False


class TcpLinkMachine(RuleBasedStateMachine):
    """Two connected layers, driven by random application actions."""

    @initialize(seed=st.integers(0, 2**16), loss=st.sampled_from([0.0, 0.02, 0.08, 0.15]),
                dup=st.sampled_from([0.0, 0.05]), reorder=st.sampled_from([0.0, 0.1]),
                corrupt=st.sampled_from([0.0, 0.03]), offload=st.booleans(),
                sack=st.booleans(), ts=st.booleans(), small_buf=st.booleans(),
                first=st.tuples(st.integers(0, 150000), st.integers(0, 150000)))
    def setup(self, seed, loss, dup, reorder, corrupt, offload, sack, ts, small_buf, first):
        cfg = TcpConfig(sack=sack, timestamps=ts, rcvbuf_autotune=not small_buf,
                        rcvbuf=8192, sndbuf=65536 if small_buf else 1 << 20)
        self.net = Net(seed=seed, loss=loss, dup=dup, reorder=reorder, corrupt=corrupt,
                       offload=offload, config_a=cfg, config_b=cfg)
        lst = self.net.b.listen(B, 80)
        acc = []
        lst.on_accept = acc.append
        c = self.net.a.connect(B, 80, 0.0)
        self.net.run(until=60.0, stop=lambda: acc and c.state is not S.SYN_SENT)
        assert c.state is S.ESTABLISHED and acc, (c, acc)
        self.sides = [Side(c), Side(acc[0])]
        self.counter = 0
        for who, n in enumerate(first):
            if n:
                self.write(who, n)

    def _data(self, n: int) -> bytes:
        self.counter += 1
        return bytes((self.counter * 31 + i) & 0xFF for i in range(n))

    @rule(who=st.integers(0, 1), n=st.integers(1, 40000))
    def write(self, who, n):
        side = self.sides[who]
        if side.shut or side.tcb.state not in (S.ESTABLISHED, S.CLOSE_WAIT):
            return
        data = self._data(n)
        taken = side.tcb.send(data, self.net.now)
        assert 0 <= taken <= n
        side.sent += data[:taken]

    @rule(who=st.integers(0, 1), n=st.integers(1, 1 << 20))
    def read(self, who, n):
        side = self.sides[who]
        got = side.tcb.recv(n)
        assert len(got) <= n
        side.got += got

    @rule(dt=st.floats(0.001, 2.0))
    def advance(self, dt):
        self.net.run(until=self.net.now + dt)

    @rule(who=st.integers(0, 1))
    def half_close(self, who):
        side = self.sides[who]
        if not side.shut:
            side.tcb.shutdown_write(self.net.now)
            side.shut = True

    @invariant()
    def delivered_is_prefix_of_sent(self):
        for me, other in ((0, 1), (1, 0)):
            got = self.sides[me].got
            assert bytes(got) == bytes(self.sides[other].sent[:len(got)])

    @invariant()
    def queues_are_bounded(self):
        for side in self.sides:
            t = side.tcb
            cfg = t.config
            assert t.ooo_bytes <= cfg.ooo_max_bytes
            assert len(t.out_of_order_queue) <= cfg.ooo_max_segments
            assert sum(len(s) for s in t.write_queue) <= t.sndbuf
            # never more than the buffer, but for one window-scale granule of rounding
            assert t.rcv_queued + t.ooo_bytes <= t.rcvbuf + (1 << t.rcv_wscale)

    def teardown(self):
        if not hasattr(self, "sides"):
            return
        net = self.net
        for side in self.sides:
            if not side.shut and side.tcb.state in (S.ESTABLISHED, S.CLOSE_WAIT):
                side.tcb.shutdown_write(net.now)
                side.shut = True
        limit = net.now + 3000.0
        for _ in range(400000):
            for side in self.sides:
                side.got += side.tcb.recv(1 << 20)
            if all(s.tcb.state in DONE for s in self.sides) and not net.frames:
                break
            if not net.step() or net.now > limit:
                break
        for side in self.sides:
            side.got += side.tcb.recv(1 << 20)
        a, b = self.sides
        ok = (bytes(a.got) == bytes(b.sent) and bytes(b.got) == bytes(a.sent)
              and a.tcb.state in DONE and b.tcb.state in DONE
              and a.tcb.error is None and b.tcb.error is None)
        if not ok:
            # Keep the evidence: the frames of the failing run, for tcpdump/wireshark.
            pcap = net.write_pcap(os.path.join(tempfile.gettempdir(), "tcp-stateful-failure.pcap"))
            raise AssertionError(f"delivered {len(a.got)}/{len(b.sent)} and "
                                 f"{len(b.got)}/{len(a.sent)} bytes, states {a.tcb} {b.tcb}, "
                                 f"errors {a.tcb.error!r} {b.tcb.error!r}; frames in {pcap}")


TcpLinkMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_tcp_link = TcpLinkMachine.TestCase
