"""In-memory test harness for TcpLayer: virtual clock, simulated link, capture.

- :class:`Capture` is an IpService that records every segment a single TcpLayer
  emits, for exact-segment tests (feed crafted segments with :func:`seg`).
- :class:`Net` joins two TcpLayers through a link with a fixed one-way delay and
  optional loss / duplication / reordering / corruption drawn from a seeded
  random generator, and runs everything on a virtual clock.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.netdev.pcap import PcapWriter
from stack.skbuff import SkBuff
from stack.tcp.api import MAX_HEADER, RouteInfo, TcpConfig
from stack.tcp.layer import TcpLayer
from stack.wire.ethernet import EthernetHeader
from stack.wire.ipv4 import Ipv4Header
from stack.wire.tcp import TcpHeader, TcpOptions, build_segment
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM

A = bytes([198, 18, 0, 1])
B = bytes([198, 18, 0, 2])


@dataclass
class Sent:
    """One segment a layer emitted, decoded."""

    src: bytes
    dst: bytes
    hdr: TcpHeader
    payload: bytes
    time: float
    gso_size: int = 0
    raw: bytes = b""
    vnet_flags: int = 0
    gso_type: int = 0
    df: bool = True

    @property
    def flags(self) -> int:
        """The TCP flags."""
        return self.hdr.flags


class Capture:
    """IpService that records what one TcpLayer sends (exact-segment tests)."""

    def __init__(self, addr: bytes = A, mtu: int = 1500, offload: bool = False) -> None:
        self.addr = addr
        self.mtu = mtu
        self.offload = offload
        self.sent: list[Sent] = []
        self.accept = True

    def route(self, dst: bytes) -> RouteInfo | None:
        """Every destination is reachable directly."""
        return RouteInfo(self.addr, self.mtu, self.offload)

    def ip_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float, *,
                  df: bool = True) -> bool:
        """Record the segment (and whether it may not be fragmented)."""
        assert proto == 6
        assert skb.headroom >= MAX_HEADER
        raw = skb.tobytes()
        hdr = TcpHeader.parse(raw)
        size = hdr.header_len + skb.gso_size if skb.gso_size else len(raw)
        assert size + 20 <= self.mtu, "segment larger than the MTU"
        self.sent.append(Sent(src, dst, hdr, raw[hdr.header_len:], now, skb.gso_size, raw,
                              skb.vnet_flags, skb.gso_type, df))
        return self.accept

    def take(self) -> list[Sent]:
        """Return and forget what was recorded."""
        out, self.sent = self.sent, []
        return out


def seg(sport: int, dport: int, seq: int, ack: int, flags: int, window: int = 65535,
        payload: bytes = b"", src: bytes = B, dst: bytes = A, urgent: int = 0,
        **opts: object) -> SkBuff:
    """A crafted segment as the IP layer would hand it to TcpLayer.input."""
    hdr = TcpHeader(sport, dport, seq, ack, flags, window, urgent,
                    options=TcpOptions(**opts))  # type: ignore[arg-type]
    return SkBuff.from_bytes(build_segment(src, dst, hdr, payload), headroom=64)


@dataclass(order=True)
class _Frame:
    when: float
    tie: int
    dst: bytes = field(compare=False)
    src: bytes = field(compare=False)
    data: bytes = field(compare=False)
    vnet_flags: int = field(compare=False)


class _Port:
    """The IpService of one side of a :class:`Net`."""

    def __init__(self, net: Net, addr: bytes) -> None:
        self.net = net
        self.addr = addr

    def route(self, dst: bytes) -> RouteInfo | None:
        return RouteInfo(self.addr, self.net.mtu, self.net.offload)

    def ip_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float, *,
                  df: bool = True) -> bool:
        return self.net.send(src, dst, skb, now)


class Net:
    """Two TcpLayers (at A and B) joined by a faulty link, on a virtual clock."""

    def __init__(self, *, seed: int = 1, delay: float = 0.01, loss: float = 0.0,
                 dup: float = 0.0, reorder: float = 0.0, corrupt: float = 0.0,
                 mtu: int = 1500, offload: bool = False,
                 config_a: TcpConfig | None = None, config_b: TcpConfig | None = None,
                 queue_limit: int = 100000) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.delay = delay
        self.loss, self.dup, self.reorder, self.corrupt = loss, dup, reorder, corrupt
        self.mtu = mtu
        self.offload = offload
        self.queue_limit = queue_limit
        self.frames: list[_Frame] = []
        self.tie = itertools.count()
        self.log: list[tuple[float, bytes, TcpHeader, int]] = []
        self.drop_filter: list = []  # callables (src, hdr, payload_len) -> bool: drop
        self.a = TcpLayer(_Port(self, A), config=config_a, rng=random.Random(seed * 7 + 1))
        self.b = TcpLayer(_Port(self, B), config=config_b, rng=random.Random(seed * 7 + 2))
        self.layers = {A: self.a, B: self.b}
        self.dropped = 0
        # the latest frames as sent (before faults), for a pcap of a failing run
        self.frames_sent: deque[tuple[float, bytes, bytes, bytes]] = deque(maxlen=20000)
        self.calls: list[tuple[float, int, Callable[[float], None]]] = []

    def at(self, when: float, fn: Callable[[float], None]) -> None:
        """Run ``fn(now)`` at virtual time ``when`` (e.g. deliver an ICMP error)."""
        heapq.heappush(self.calls, (when, next(self.tie), fn))

    def send(self, src: bytes, dst: bytes, skb: SkBuff, now: float) -> bool:
        data = skb.tobytes()
        hdr = TcpHeader.parse(data)
        plen = len(data) - hdr.header_len
        if skb.gso_size:
            assert hdr.header_len + skb.gso_size + 20 <= self.mtu, "GSO segments too big"
        else:
            assert len(data) + 20 <= self.mtu, "segment larger than the MTU"
        self.log.append((now, src, hdr, plen))
        self.frames_sent.append((now, src, dst, data))
        if len(self.frames) >= self.queue_limit:
            return False
        for f in self.drop_filter:
            if f(src, hdr, plen):
                self.dropped += 1
                return True
        r = self.rng
        if self.loss and r.random() < self.loss:
            self.dropped += 1
            return True
        copies = 2 if self.dup and r.random() < self.dup else 1
        for _ in range(copies):
            when = now + self.delay
            if self.reorder and r.random() < self.reorder:
                when += r.uniform(0, 3 * self.delay)
            payload = data
            flags = skb.vnet_flags
            if self.corrupt and not flags and r.random() < self.corrupt:
                b = bytearray(data)
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
                payload = bytes(b)
            heapq.heappush(self.frames, _Frame(when, next(self.tie), dst, src, payload,
                                               flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
        return True

    def write_pcap(self, path: str) -> str:
        """Write the latest frames sent (as Ethernet/IPv4/TCP) to a pcap file."""
        macs = {A: b"\x02\x00\x00\x00\x00\x01", B: b"\x02\x00\x00\x00\x00\x02"}
        with PcapWriter(path) as w:
            for t, src, dst, seg in self.frames_sent:
                eth = EthernetHeader(macs[dst], macs[src], 0x0800).to_bytes()
                ip = Ipv4Header(src, dst, 6).to_bytes(len(seg))
                w.write(eth + ip + seg, t)
        return path

    def next_event(self) -> float | None:
        times = [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        if self.frames:
            times.append(self.frames[0].when)
        if self.calls:
            times.append(self.calls[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next event and process it; False when nothing is pending."""
        t = self.next_event()
        if t is None:
            return False
        self.now = max(self.now, t)
        if self.calls and self.calls[0][0] <= self.now:
            heapq.heappop(self.calls)[2](self.now)
            return True
        if self.frames and self.frames[0].when <= self.now:
            fr = heapq.heappop(self.frames)
            skb = SkBuff.from_bytes(fr.data, headroom=64)
            skb.vnet_flags = fr.vnet_flags
            self.layers[fr.dst].input(skb, fr.src, fr.dst, self.now)
            return True
        for layer in (self.a, self.b):
            d = layer.next_deadline()
            if d is not None and d <= self.now:
                layer.on_timer(self.now)
        return True

    def run(self, until: float | None = None, max_steps: int = 200000,
            stop=None) -> None:
        """Process events until ``stop()`` is true, time ``until``, or nothing is left."""
        for _ in range(max_steps):
            if stop is not None and stop():
                return
            t = self.next_event()
            if t is None:
                return
            if until is not None and t > until:
                self.now = until
                return
            self.step()
        raise AssertionError("harness step limit reached")
