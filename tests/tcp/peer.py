"""A scripted remote end for exact-segment tests: one TcpLayer at A, crafted segments from B."""

from __future__ import annotations

import random

from harness import A, B, Capture, Sent, seg

from stack import seq as sq
from stack.tcp.api import TcpConfig
from stack.tcp.layer import Listener, TcpLayer
from stack.tcp.tcb import Tcb
from stack.wire.tcp import ACK, SYN


class Peer:
    """The fake peer at B:5000 talking to a real TcpLayer at A."""

    def __init__(self, config: TcpConfig | None = None, *, ts: bool = True, sack: bool = True,
                 wscale: int | None = 2, mss: int = 1460, offload: bool = False,
                 isn: int = 1000, window: int = 65535) -> None:
        self.cap = Capture(A, 1500, offload)
        self.layer = TcpLayer(self.cap, config=config or TcpConfig(), rng=random.Random(5))
        self.ts = ts
        self.sack = sack
        self.wscale = wscale
        self.mss = mss
        self.isn = isn
        self.seq = isn            # our next sequence number
        self.ack = 0              # what we acknowledge
        self.tsval = 500
        self.tsecr = 0
        self.window = window
        self.sport = 5000
        self.dport = 80
        self.now = 0.0

    # -- sending -----------------------------------------------------------
    def send(self, flags: int, payload: bytes = b"", *, seq: int | None = None,
             ack: int | None = None, window: int | None = None, now: float | None = None,
             tsval: int | None = None, advance: bool = True, **opts: object) -> list[Sent]:
        """Feed one segment to the layer; return what it emitted in answer."""
        if now is not None:
            self.now = now
        s = self.seq if seq is None else seq
        a = self.ack if ack is None else ack
        if self.ts and "timestamp" not in opts and not flags & SYN:
            opts["timestamp"] = (self.tsval if tsval is None else tsval, self.tsecr)
        if window is None:
            # the window field of a non-SYN segment is scaled (RFC 7323 §2.3)
            w = self.window if flags & SYN else self.window >> (self.wscale or 0)
        else:
            w = window
        skb = seg(self.sport, self.dport, s, a, flags if flags else ACK, w, payload, **opts)
        self.layer.input(skb, B, A, self.now)
        if advance and seq is None:
            n = len(payload) + (1 if flags & SYN else 0) + (1 if flags & 1 else 0)
            self.seq = sq.add(self.seq, n)
        return self.take()

    def take(self) -> list[Sent]:
        """What the layer sent since last time; remember its latest TSval."""
        out = self.cap.take()
        for s in out:
            if s.hdr.options.timestamp is not None:
                self.tsecr = s.hdr.options.timestamp[0]
        return out

    def tick(self, now: float) -> list[Sent]:
        """Advance the virtual clock to ``now``, running the layer's timers."""
        self.now = now
        for _ in range(1000):
            d = self.layer.next_deadline()
            if d is None or d > now:
                break
            self.layer.on_timer(d)
        return self.take()

    def fire(self) -> tuple[float, list[Sent]]:
        """Run the layer's next timer; return its time and what was sent."""
        d = self.layer.next_deadline()
        assert d is not None
        return d, self.tick(d)

    # -- handshakes --------------------------------------------------------
    def syn_options(self) -> dict[str, object]:
        """Options of our SYN."""
        opts: dict[str, object] = {"mss": self.mss}
        if self.wscale is not None:
            opts["wscale"] = self.wscale
        if self.sack:
            opts["sack_permitted"] = True
        if self.ts:
            opts["timestamp"] = (self.tsval, 0)
        return opts

    def accept_connection(self, port: int = 80) -> tuple[Listener, Tcb, Sent]:
        """Listener on A:port, full passive handshake at t=0 / t=0.1; returns the SYN-ACK."""
        lst = self.layer.listen(A, port)
        self.dport = port
        out = self.send(SYN, now=0.0, **self.syn_options())
        assert len(out) == 1
        synack = out[0]
        self.ack = sq.add(synack.hdr.seq, 1)
        self.tsval += 100
        self.send(ACK, now=0.1)
        tcb = lst.accept()
        assert tcb is not None
        return lst, tcb, synack

    def open_connection(self) -> tuple[Tcb, Sent]:
        """Active open from the layer, SYN-ACK from us at t=0.1; returns the SYN."""
        tcb = self.layer.connect(B, 5000, 0.0, sport=80)
        out = self.take()
        assert len(out) == 1
        syn = out[0]
        self.sport, self.dport = 5000, 80
        self.ack = sq.add(syn.hdr.seq, 1)
        if self.ts:
            self.tsecr = syn.hdr.options.timestamp[0]
        opts = self.syn_options()
        if self.ts:
            opts["timestamp"] = (self.tsval, self.tsecr)
        out = self.send(SYN | ACK, now=0.1, **opts)
        assert len(out) == 1 and out[0].flags == ACK
        return tcb, syn
