"""MemoryLink: delivery order, timing on a virtual clock, faults, bounds, offload."""

from __future__ import annotations

import struct

import pytest
from netdev_frames import partial_udp_frame, udp_checksum_ok, udp_frame

from stack.netdev.memory import FaultModel, MemoryLink, VirtualClock
from stack.netdev.offload import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
)
from stack.skbuff import SkBuff


def numbered(i: int, size: int = 100) -> SkBuff:
    """A frame whose payload starts with its number, with some headroom."""
    return SkBuff.from_bytes(udp_frame(struct.pack("!I", i) + bytes(size - 4)), headroom=32)


def number_of(skb: SkBuff) -> int:
    return struct.unpack_from("!I", skb.buf, skb.data + 42)[0]


def run(link: MemoryLink, frames: int, gap: float = 1e-4) -> list[tuple[float, int]]:
    """Send ``frames`` numbered frames a->b, one every ``gap``; return (arrival, number)."""
    out: list[tuple[float, int]] = []
    for i in range(frames):
        now = i * gap
        out += [(now, number_of(s)) for _e, s in link.poll(now)]
        link.a.write(numbered(i), now)
    for _ in range(frames * 2 + 10):  # bounded drain
        t = link.next_deadline()
        if t is None:
            break
        out += [(t, number_of(s)) for _e, s in link.poll(t)]
    assert link.next_deadline() is None
    return out


def test_virtual_clock() -> None:
    c = VirtualClock()
    assert c.now == 0.0
    assert c.advance(0.5) == 0.5
    assert c.advance_to(2.0) == 2.0
    assert c.advance_to(1.0) == 2.0  # never backwards
    with pytest.raises(ValueError):
        c.advance(-1)


def test_clean_link_delivers_in_order_to_the_peer() -> None:
    link = MemoryLink()
    for i in range(5):
        assert link.a.write(numbered(i), 1.0)
    link.b.write(numbered(99), 1.0)
    got = link.poll(1.0)
    assert [(end.name, number_of(s)) for end, s in got] == \
        [("b", 0), ("b", 1), ("b", 2), ("b", 3), ("b", 4), ("a", 99)]
    assert link.poll(1.0) == []
    assert link.a.counters["tx_frames"] == 5 and link.b.counters["rx_frames"] == 5
    assert link.a.counters["rx_frames"] == 1


def test_delivered_buffer_has_headroom_and_is_a_copy() -> None:
    link = MemoryLink()
    skb = numbered(7)
    sent = skb.tobytes()
    link.a.write(skb, 0.0)
    skb.buf[skb.data:skb.tail] = bytes(len(skb))  # the sender reuses its buffer
    ((_end, got),) = link.poll(0.0)
    assert got.tobytes() == sent
    assert got.headroom == 128


def test_delay_and_next_deadline() -> None:
    link = MemoryLink(a_to_b=FaultModel(delay=0.010))
    link.a.write(numbered(1), 1.0)
    assert link.next_deadline() == pytest.approx(1.010)
    assert link.poll(1.0099) == []
    assert len(link.poll(1.0101)) == 1
    assert link.next_deadline() is None


def test_directions_have_their_own_model() -> None:
    link = MemoryLink(a_to_b=FaultModel(delay=0.010), b_to_a=FaultModel(delay=0.001))
    link.a.write(numbered(1), 0.0)
    link.b.write(numbered(2), 0.0)
    assert [(e.name, number_of(s)) for e, s in link.poll(0.002)] == [("a", 2)]
    assert [(e.name, number_of(s)) for e, s in link.poll(0.010)] == [("b", 1)]


def test_jitter_stays_within_bounds_and_varies() -> None:
    link = MemoryLink(a_to_b=FaultModel(delay=0.010, jitter=0.002), seed=3)
    for i in range(200):
        link.a.write(numbered(i), 0.0)
    arrivals = []
    while (t := link.next_deadline()) is not None:
        arrivals += [t] * len(link.poll(t))
    assert len(arrivals) == 200
    assert min(arrivals) >= 0.008 - 1e-12 and max(arrivals) <= 0.012 + 1e-12
    assert max(arrivals) - min(arrivals) > 0.002  # spread, not a constant


def test_rate_serializes_and_queues() -> None:
    # 1000-byte frames at 8 Mbit/s take 1 ms each on the wire.
    link = MemoryLink(a_to_b=FaultModel(rate_bps=8e6, delay=0.005))
    for i in range(4):
        link.a.write(SkBuff.from_bytes(udp_frame(struct.pack("!I", i) + bytes(954))), 0.0)
    arrivals = []
    while (t := link.next_deadline()) is not None:
        arrivals += [t] * len(link.poll(t))
    assert arrivals == pytest.approx([0.006, 0.007, 0.008, 0.009])
    # An idle transmitter does not carry old queueing forward.
    link.a.write(SkBuff.from_bytes(udp_frame(bytes(958))), 1.0)
    assert link.next_deadline() == pytest.approx(1.006)


def test_loss_rate_within_bounds() -> None:
    link = MemoryLink(a_to_b=FaultModel(loss=0.1), seed=11)
    got = run(link, 5000)
    lost = link.a.counters["lost"]
    assert 400 <= lost <= 600  # 500 expected; sd ~21
    assert len(got) == 5000 - lost
    assert [n for _t, n in got] == sorted(n for _t, n in got)


def test_duplicates_are_identical_and_counted() -> None:
    link = MemoryLink(a_to_b=FaultModel(duplicate=0.05), seed=5)
    got = run(link, 4000)
    dup = link.a.counters["duplicated"]
    assert 120 <= dup <= 280  # 200 expected; sd ~14
    numbers = [n for _t, n in got]
    assert len(numbers) == 4000 + dup
    assert len(set(numbers)) == 4000


def test_reorder_lets_later_frames_overtake() -> None:
    link = MemoryLink(a_to_b=FaultModel(reorder=0.1, reorder_delay=0.001), seed=9)
    got = [n for _t, n in run(link, 3000, gap=1e-4)]
    reordered = link.a.counters["reordered"]
    assert 200 <= reordered <= 400  # 300 expected; sd ~16
    assert sorted(got) == list(range(3000))
    late = sum(1 for i in range(1, len(got)) if got[i] < got[i - 1])
    assert late > 0.5 * reordered  # most held-back frames arrive after a successor


def test_corruption_flips_one_bit_after_the_ethernet_header() -> None:
    link = MemoryLink(a_to_b=FaultModel(corrupt=1.0), seed=1)
    sent = [udp_frame(bytes([i]) * 60) for i in range(50)]
    for f in sent:
        link.a.write(SkBuff.from_bytes(f), 0.0)
    got = [s.tobytes() for _e, s in link.poll(0.0)]
    assert link.a.counters["corrupted"] == 50
    for before, after in zip(sent, got, strict=True):
        diff = [i for i in range(len(before)) if before[i] != after[i]]
        assert len(diff) == 1 and diff[0] >= 14
        assert bin(before[diff[0]] ^ after[diff[0]]).count("1") == 1


def test_corruption_completes_a_partial_checksum_first() -> None:
    link = MemoryLink(a_to_b=FaultModel(corrupt=1.0), seed=2)
    for i in range(30):
        skb = SkBuff.from_bytes(partial_udp_frame(bytes([i]) * 40))
        skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
        skb.csum_start, skb.csum_offset = 34, 6
        link.a.write(skb, 0.0)
    for _e, got in link.poll(0.0):
        assert got.vnet_flags == 0  # neither "finish me" nor "verified"
        damaged = got.tobytes()
        # Undo the flipped bit: what remains must be a frame with a full checksum.
        fixed = [damaged[:i] + bytes([damaged[i] ^ (1 << b)]) + damaged[i + 1:]
                 for i in range(14, len(damaged)) for b in range(8)]
        assert any(udp_checksum_ok(f) for f in fixed)


def test_same_seed_same_bytes_different_seed_differs() -> None:
    model = FaultModel(loss=0.05, duplicate=0.05, reorder=0.05, corrupt=0.05,
                       delay=0.001, jitter=0.0005)

    def trace(seed: int) -> list[tuple[float, str, bytes]]:
        link = MemoryLink(a_to_b=model, b_to_a=model, seed=seed)
        out = []
        for i in range(400):
            now = i * 1e-4
            link.a.write(numbered(i), now)
            link.b.write(numbered(10_000 + i), now)
            out += [(now, e.name, s.tobytes()) for e, s in link.poll(now)]
        out += [(1.0, e.name, s.tobytes()) for e, s in link.poll(1.0)]
        return out

    first = trace(42)
    assert trace(42) == first
    assert trace(43) != first


def test_limit_bounds_frames_in_flight() -> None:
    link = MemoryLink(a_to_b=FaultModel(delay=0.01), limit=5)
    results = [link.a.write(numbered(i), 0.0) for i in range(7)]
    assert results == [True] * 5 + [False] * 2
    assert link.a.counters["tx_dropped_limit"] == 2
    assert link.b.write(numbered(100), 0.0)  # the other direction has its own budget
    assert len(link.poll(0.01)) == 6
    assert link.a.write(numbered(8), 0.02)  # room again once delivered


def test_offload_link_keeps_vnet_metadata() -> None:
    link = MemoryLink(offload=True)
    skb = SkBuff.from_bytes(partial_udp_frame(b"x" * 100))
    skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
    skb.gso_type, skb.gso_size, skb.hdr_len = VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54
    skb.csum_start, skb.csum_offset = 34, 6
    link.a.write(skb, 0.0)
    ((_e, got),) = link.poll(0.0)
    assert (got.vnet_flags, got.gso_type, got.gso_size, got.hdr_len,
            got.csum_start, got.csum_offset) == (1, VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54, 34, 6)
    assert got.tobytes() == skb.tobytes()


def test_no_offload_link_completes_checksums_and_refuses_gso() -> None:
    link = MemoryLink(offload=False)
    skb = SkBuff.from_bytes(partial_udp_frame(b"hello world"))
    skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
    skb.csum_start, skb.csum_offset = 34, 6
    assert not udp_checksum_ok(skb.tobytes())
    link.a.write(skb, 0.0)
    ((_e, got),) = link.poll(0.0)
    assert got.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0
    assert udp_checksum_ok(got.tobytes())
    assert got.tobytes() == udp_frame(b"hello world")
    assert skb.vnet_flags == VIRTIO_NET_HDR_F_NEEDS_CSUM  # the sender's skb is untouched
    big = SkBuff.from_bytes(udp_frame(bytes(3000)))
    big.gso_type, big.gso_size = VIRTIO_NET_HDR_GSO_TCPV4, 1448
    with pytest.raises(ValueError, match="gso_size"):
        link.a.write(big, 0.0)


def test_bad_frames_are_counted_drops() -> None:
    link = MemoryLink()
    assert not link.a.write(SkBuff.from_bytes(b"short"), 0.0)
    skb = SkBuff.from_bytes(udp_frame(b"abc"))
    skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
    skb.csum_start, skb.csum_offset = 40, 200  # field beyond the frame
    assert not link.a.write(skb, 0.0)
    assert link.a.counters["tx_errors"] == 2
    assert link.poll(1.0) == []


def test_corruption_rate_within_bounds() -> None:
    link = MemoryLink(a_to_b=FaultModel(corrupt=0.05), seed=13, limit=4000)
    sent = {i: numbered(i).tobytes() for i in range(4000)}
    for i in range(4000):
        link.a.write(SkBuff.from_bytes(sent[i]), 0.0)
    got = link.poll(0.0)
    damaged = sum(1 for _e, s in got if s.tobytes() not in sent.values())
    assert damaged == link.a.counters["corrupted"]
    assert 120 <= damaged <= 280  # 200 expected; sd ~14
