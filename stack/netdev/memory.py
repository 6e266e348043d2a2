"""An in-memory link between two ends on a virtual clock (tests, simulation).

Nothing here reads a clock or sleeps: senders pass ``now``, the owner of the
:class:`VirtualClock` asks :meth:`MemoryLink.poll` for the frames that have
arrived by a given time and :meth:`MemoryLink.next_deadline` for when to look
again. Faults (loss, duplication, reordering, corruption, delay, jitter, rate)
are drawn from one ``random.Random(seed)``, so a run is repeatable byte for byte.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from stack.netdev.faults import FaultDecider, FaultModel, flip_bit
from stack.netdev.offload import (
    ETH_HLEN,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    complete_checksum,
)
from stack.skbuff import SkBuff
from stack.wire.fields import ETH_TYPE
from stack.wire.vnet import VnetFields, restore_vnet, save_vnet

_ETH_IP = b"\x08\x00"

__all__ = ["FaultModel", "LinkEnd", "MemoryLink", "VirtualClock", "HEADROOM"]

#: Headroom of delivered buffers, as for frames read from a TAP.
HEADROOM = 128
_COUNTERS = ("tx_frames", "tx_bytes", "rx_frames", "rx_bytes", "tx_dropped_limit",
             "tx_errors", "lost", "duplicated", "reordered", "corrupted")


class VirtualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = float(now)

    def advance(self, dt: float) -> float:
        """Move forward by ``dt`` seconds (>= 0); return the new time."""
        if dt < 0:
            raise ValueError("a clock cannot go backwards")
        self.now += dt
        return self.now

    def advance_to(self, t: float) -> float:
        """Move forward to ``t`` (no-op when ``t`` is in the past); return the new time."""
        if t > self.now:
            self.now = float(t)
        return self.now


@dataclass(frozen=True)
class _Frame:
    data: bytes
    vnet: VnetFields  # flags, gso_type, hdr_len, gso_size, start, off


class LinkEnd:
    """One end of a :class:`MemoryLink`: what a device driver would write to."""

    def __init__(self, link: MemoryLink, name: str, faults: FaultModel) -> None:
        self._link = link
        self.name = name
        self.faults = faults
        self.offload = link.offload
        self.peer: LinkEnd | None = None
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.in_flight = 0
        #: The fault model's decisions for frames sent from this end (the link's RNG).
        self.decider = FaultDecider(faults, link.rng)

    def write(self, skb: SkBuff, now: float) -> bool:
        """Send a copy of the frame and its vnet metadata towards the peer.

        False (and counted) when ``limit`` frames are already in flight or the
        metadata is unusable. A frame lost by the fault model still returns True:
        a sender cannot see loss on a wire.
        """
        return self._link._send(self, skb, now)

    def __repr__(self) -> str:
        return f"LinkEnd({self.name!r}, in_flight={self.in_flight})"


class MemoryLink:
    """Two :class:`LinkEnd` s, ``a`` and ``b``, joined by a faulty, bounded wire."""

    def __init__(self, a_to_b: FaultModel | None = None, b_to_a: FaultModel | None = None,
                 seed: int = 0, offload: bool = True, limit: int = 1000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.offload = offload
        self.limit = limit
        self.rng = random.Random(seed)
        self.a = LinkEnd(self, "a", a_to_b or FaultModel())
        self.b = LinkEnd(self, "b", b_to_a or FaultModel())
        self.a.peer, self.b.peer = self.b, self.a
        # (arrival time, send order, receiving end, frame): ties go by send order
        self._heap: list[tuple[float, int, LinkEnd, _Frame]] = []
        self._order = 0

    def _send(self, end: LinkEnd, skb: SkBuff, now: float) -> bool:
        c = end.counters
        n = skb.tail - skb.data
        if end.in_flight >= self.limit:
            c["tx_dropped_limit"] += 1
            return False
        flags = skb.vnet_flags
        if n < ETH_HLEN or (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
                            and skb.csum_start + skb.csum_offset + 2 > n):
            c["tx_errors"] += 1
            return False
        if not self.offload and skb.gso_size:
            raise ValueError(f"{end.name}: super-segment (gso_size {skb.gso_size}) "
                             "written to a link without offload")
        data = bytearray(memoryview(skb.buf)[skb.data:skb.tail])
        vnet = save_vnet(skb)
        if not self.offload and flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            vnet = _completed(data, vnet)
        c["tx_frames"] += 1
        c["tx_bytes"] += n
        self._impair(end, data, vnet, now)
        return True

    def _impair(self, end: LinkEnd, data: bytearray, vnet: VnetFields,
                now: float) -> None:
        c = end.counters
        fate = end.decider.decide(now, len(data))
        if fate.lost:
            c["lost"] += 1
            return
        if fate.corrupt and data[ETH_TYPE:ETH_HLEN] == _ETH_IP:
            # Only IPv4 frames are damaged: the IP, TCP, UDP and ICMP checksums are
            # what such noise tests. An ARP frame has no checksum of its own (a real
            # wire's FCS drops it), and a damaged one would poison a neighbour cache.
            vnet = _corrupt(data, vnet, fate.bitpos)
            c["corrupted"] += 1
        if fate.reordered:
            c["reordered"] += 1
        frame = _Frame(bytes(data), vnet)
        self._push(end, fate.arrival, frame)
        if fate.copies == 2 and end.in_flight < self.limit:
            c["duplicated"] += 1
            self._push(end, fate.arrival, frame)

    def _push(self, end: LinkEnd, arrival: float, frame: _Frame) -> None:
        assert end.peer is not None
        end.in_flight += 1
        heapq.heappush(self._heap, (arrival, self._order, end.peer, frame))
        self._order += 1

    def poll(self, now: float) -> list[tuple[LinkEnd, SkBuff]]:
        """Frames that have arrived by ``now``, oldest first, as fresh SkBuffs."""
        out: list[tuple[LinkEnd, SkBuff]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _t, _o, dst, frame = heapq.heappop(heap)
            assert dst.peer is not None
            dst.peer.in_flight -= 1
            skb = SkBuff.from_bytes(frame.data, headroom=HEADROOM)
            restore_vnet(skb, frame.vnet)
            dst.counters["rx_frames"] += 1
            dst.counters["rx_bytes"] += len(frame.data)
            out.append((dst, skb))
        return out

    def next_deadline(self) -> float | None:
        """Arrival time of the next frame in flight, or None when the wire is empty."""
        return self._heap[0][0] if self._heap else None

    def in_flight(self) -> int:
        """Frames on the wire in both directions."""
        return len(self._heap)


def _completed(data: bytearray, vnet: VnetFields) -> VnetFields:
    """Finish a partial checksum in ``data`` and return metadata without NEEDS_CSUM."""
    flags, gso_type, hdr_len, gso_size, start, off = vnet
    complete_checksum(data, 0, len(data), start, off)
    return flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, 0, 0


def _corrupt(data: bytearray, vnet: VnetFields,
             where: float) -> VnetFields:
    """Flip one bit after the Ethernet header, as noise on a wire would.

    A frame with a partial checksum gets it completed first; otherwise the
    receiver, trusting NEEDS_CSUM as the kernel does, could not notice.
    """
    if vnet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        vnet = _completed(data, vnet)
    # A "checksum already verified" mark would hide the damage from the receiver.
    vnet = (vnet[0] & ~VIRTIO_NET_HDR_F_DATA_VALID, *vnet[1:])
    flip_bit(data, ETH_HLEN, len(data), where)
    return vnet
