"""A simulated network on a virtual clock: stacks joined by in-memory links.

Nothing here touches a real device or real time. A :class:`SimNetwork` owns a
:class:`VirtualClock`, some :class:`~stack.core.Stack` hosts and the
:class:`~stack.netdev.memory.MemoryLink` between them; :meth:`SimNetwork.step` jumps
the clock to the next event (a frame arriving or a timer falling due) and runs it.
With the same seed a run produces the same frames, byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from stack.core import Stack
from stack.iface import Interface
from stack.netdev.faults import FaultModel
from stack.netdev.memory import LinkEnd, MemoryLink, VirtualClock
from stack.skbuff import SkBuff
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4


class FrameRecorder(Protocol):
    """Where a SimNetwork records the frames sent: a PcapTee (stack/netdev/pcap.py) or
    the testing kit's MemoryCapture."""

    def tx(self, dev_name: str, skb: SkBuff, now: float) -> None:
        """Record one frame sent on ``dev_name`` at ``now``."""
        ...


class Probe:
    """A raw port on the simulated network: the test sends hand-made frames through
    it and collects every frame the stack sends back (as bytes, offloads resolved)."""

    def __init__(self, net: SimNetwork, end: LinkEnd, mac: bytes) -> None:
        self.net = net
        self.end = end
        self.mac = mac
        self.received: list[SkBuff] = []

    def send(self, frame: bytes, *, gso_size: int = 0, csum_start: int = -1) -> bool:
        """Put one Ethernet frame on the wire towards the stack, now. With ``gso_size``
        it is a TCPv4 super-segment; with ``csum_start`` its checksum is partial."""
        skb = SkBuff.from_bytes(frame)
        if gso_size:
            skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV4, gso_size
        if csum_start >= 0:
            skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
            skb.csum_start, skb.csum_offset = csum_start, 16
        if self.net.pcap is not None:
            self.net.pcap.tx("probe", skb, self.net.now)
        return self.end.write(skb, self.net.now)

    def take(self) -> list[bytes]:
        """The frames received since the last call, as bytes."""
        return [skb.tobytes() for skb in self.take_skbs()]

    def take_skbs(self) -> list[SkBuff]:
        """The frames received since the last call, with their offload metadata."""
        out, self.received = self.received, []
        return out


class SimNetwork:
    """Hosts and links on one virtual clock."""

    def __init__(self, seed: int = 0, *, pcap: FrameRecorder | None = None,
                 start_time: float = 1000.0) -> None:
        self.rng = random.Random(seed)
        self.clock = VirtualClock(start_time)
        self.hosts: dict[str, Stack] = {}
        self.links: list[MemoryLink] = []
        self.ends: dict[int, tuple[Stack, Interface]] = {}      # id(LinkEnd) -> binding
        self.wires: dict[tuple[int, int], LinkEnd] = {}         # (id(stack), ifindex) -> end
        #: Frames are recorded once, when sent (a capture of every link at once).
        self.pcap = pcap
        self.events = 0
        self.probes: dict[int, Probe] = {}                      # id(LinkEnd) -> probe

    @property
    def now(self) -> float:
        """Current virtual time in seconds."""
        return self.clock.now

    def add_host(self, name: str, *, forwarding: bool = False) -> Stack:
        """A new host (a whole stack) called ``name``."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        stack = Stack(forwarding=forwarding, rng=random.Random(self.rng.random()))
        self.hosts[name] = stack
        return stack

    def connect(self, a: Stack, a_addr: str, b: Stack, b_addr: str, *,
                a_to_b: FaultModel | None = None, b_to_a: FaultModel | None = None,
                mtu: int = 1500, offload: bool = True) -> MemoryLink:
        """Join two hosts with a link; each gets an interface with the given address."""
        link = MemoryLink(a_to_b, b_to_a, seed=self.rng.randrange(1 << 30), offload=offload)
        ia = a.add_interface(f"eth{len(a.interfaces)}", a_addr, mtu=mtu, offload=offload)
        ib = b.add_interface(f"eth{len(b.interfaces)}", b_addr, mtu=mtu, offload=offload)
        self.links.append(link)
        for end, stack, iface in ((link.a, a, ia), (link.b, b, ib)):
            self.ends[id(end)] = (stack, iface)
            self.wires[(id(stack), iface.index)] = end
        return link

    def add_probe(self, stack: Stack, stack_addr: str, *, mtu: int = 1500,
                  offload: bool = False, faults: FaultModel | None = None) -> Probe:
        """A raw port joined to ``stack`` by a new interface with ``stack_addr``."""
        link = MemoryLink(faults, None, seed=self.rng.randrange(1 << 30), offload=offload)
        iface = stack.add_interface(f"eth{len(stack.interfaces)}", stack_addr, mtu=mtu,
                                    offload=offload)
        self.links.append(link)
        self.ends[id(link.b)] = (stack, iface)
        self.wires[(id(stack), iface.index)] = link.b
        probe = Probe(self, link.a, bytes([2, 0, 0, 0xAA, len(self.probes), 1]))
        self.probes[id(link.a)] = probe
        return probe

    def start(self) -> None:
        """Announce every interface (gratuitous ARP) and send what that queued."""
        for stack in self.hosts.values():
            stack.start(self.now)
        self.flush()

    def flush(self) -> None:
        """Move every frame the stacks queued onto their links."""
        now = self.now
        for stack in self.hosts.values():
            for iface, skb in stack.drain():
                end = self.wires[(id(stack), iface.index)]
                if self.pcap is not None:
                    self.pcap.tx(iface.name, skb, now)
                end.write(skb, now)

    def next_event(self) -> float | None:
        """Virtual time of the next arrival or timer."""
        times = [link.next_deadline() for link in self.links]
        times += [s.next_deadline() for s in self.hosts.values()]
        live = [t for t in times if t is not None]
        return min(live) if live else None

    def step(self, limit: float | None = None) -> bool:
        """Advance to the next event (not past ``limit``) and run it; False if none."""
        t = self.next_event()
        if t is None or (limit is not None and t > limit):
            if limit is not None and limit > self.now:
                self.clock.advance_to(limit)
            return False
        if t > self.now:
            self.clock.advance_to(t)
        now = self.now
        self.events += 1
        for stack in self.hosts.values():
            stack.begin_batch()
        try:
            self._deliver(now)
        finally:
            # Even when a handler raised: an open batch would hold later sends.
            for stack in self.hosts.values():
                stack.end_batch(now)
        for stack in self.hosts.values():
            d = stack.next_deadline()
            if d is not None and d <= now:
                stack.on_timer(now)
        self.flush()
        return True

    def _deliver(self, now: float) -> None:
        for link in self.links:
            for end, skb in link.poll(now):
                probe = self.probes.get(id(end))
                if probe is not None:
                    probe.received.append(skb)
                    continue
                stack, iface = self.ends[id(end)]
                stack.receive_frame(iface, skb, now)

    def run(self, duration: float, max_events: int = 1_000_000) -> None:
        """Run for ``duration`` virtual seconds (or until ``max_events``)."""
        end = self.now + duration
        for _ in range(max_events):
            if not self.step(limit=end):
                return
        raise RuntimeError(f"simulation did not settle within {max_events} events")

    def run_until(self, predicate: Callable[[], bool], timeout: float,
                  max_events: int = 1_000_000) -> bool:
        """Run until ``predicate()`` holds (True) or ``timeout`` virtual seconds pass."""
        end = self.now + timeout
        for _ in range(max_events):
            if predicate():
                return True
            if not self.step(limit=end):
                return predicate()
        return predicate()
