"""TapDevice framing, ring and backlog, without a real TAP.

A SOCK_SEQPACKET socket pair keeps message boundaries as a TAP fd does, so the
device's read/write paths run unchanged against the test's end of the pair.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from netdev_frames import partial_udp_frame, udp_checksum_ok, udp_frame

from stack.netdev.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VNET,
)
from stack.netdev.tap import FRAME_MAX, HEADROOM, TapDevice
from stack.skbuff import SkBuff


class FakeDev:
    """The part of pytun.TunTapDevice that TapDevice uses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.name = "fake0"

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def make(offload: bool, batch: int = 4, backlog: int = 3,
         sndbuf: int | None = None) -> tuple[TapDevice, socket.socket]:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    peer.settimeout(5)
    if sndbuf:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return TapDevice(FakeDev(ours), offload=offload, mtu=1500, batch=batch,
                     backlog=backlog), peer


@pytest.fixture
def pair() -> Iterator[tuple[TapDevice, socket.socket]]:
    dev, peer = make(offload=True)
    yield dev, peer
    dev.close()
    peer.close()


def test_read_parses_vnet_header_into_the_ring(pair: tuple[TapDevice, socket.socket]) -> None:
    dev, peer = pair
    frame = udp_frame(b"a" * 3000)
    peer.send(VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16)
              + frame)
    (skb,) = dev.read_batch()
    assert skb.data == HEADROOM and skb.tobytes() == frame
    assert (skb.vnet_flags, skb.gso_type, skb.hdr_len, skb.gso_size,
            skb.csum_start, skb.csum_offset) == (1, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16)
    assert dev.counters["rx_frames"] == 1 and dev.counters["rx_bytes"] == len(frame)
    assert dev.read_batch() == []


def test_batch_bound_and_buffer_reuse(pair: tuple[TapDevice, socket.socket]) -> None:
    dev, peer = pair
    for i in range(6):
        peer.send(VNET.pack(0, 0, 0, 0, 0, 0) + udp_frame(bytes([i])))
    first = dev.read_batch()
    assert len(first) == 4
    ids = [id(s) for s in first]
    second = dev.read_batch()
    assert [s.tobytes()[-1] for s in second] == [4, 5]
    assert [id(s) for s in second] == ids[:2]  # the same preallocated buffers


def test_bad_input_is_counted_not_raised(pair: tuple[TapDevice, socket.socket]) -> None:
    dev, peer = pair
    frame = udp_frame(b"x")
    peer.send(VNET.pack(0x40, 0, 0, 0, 0, 0) + frame)  # unknown flag
    peer.send(VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 200) + frame)
    peer.send(VNET.pack(0, 9, 0, 1448, 0, 0) + frame)  # unknown gso type
    peer.send(VNET.pack(0, VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 0, 0) + frame)  # no gso_size
    peer.send(b"\x00" * 12)  # runt
    peer.send(VNET.pack(0, 0, 0, 0, 0, 0) + bytes(FRAME_MAX + 1))  # too big
    peer.send(VNET.pack(0, 0, 0, 0, 0, 0) + frame)
    got: list[bytes] = []
    for _ in range(3):
        got += [s.tobytes() for s in dev.read_batch()]
    assert got == [frame]
    c = dev.counters
    assert (c["rx_dropped_bad_vnet"], c["rx_errors"], c["rx_dropped_oversize"]) == (4, 1, 1)


def test_write_puts_vnet_header_in_headroom_or_a_second_iovec(
        pair: tuple[TapDevice, socket.socket]) -> None:
    dev, peer = pair
    frame = partial_udp_frame(b"payload")
    for headroom in (32, 0):
        skb = SkBuff.from_bytes(frame, headroom=headroom)
        skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
        skb.csum_start, skb.csum_offset = 34, 6
        assert dev.write(skb)
        assert peer.recv(70000) == VNET.pack(1, 0, 0, 0, 34, 6) + frame
    assert dev.counters["tx_frames"] == 2
    assert dev.counters["tx_bytes"] == 2 * len(frame)


def test_write_refuses_bad_vnet_metadata(pair: tuple[TapDevice, socket.socket]) -> None:
    dev, _peer = pair
    skb = SkBuff.from_bytes(udp_frame(b"x"), headroom=16)
    skb.gso_type = VIRTIO_NET_HDR_GSO_TCPV4  # gso without a segment size
    assert not dev.write(skb)
    assert dev.counters["tx_dropped_bad_vnet"] == 1 and dev.counters["tx_frames"] == 0


def test_plain_mode_completes_checksums_and_drops_super_segments() -> None:
    dev, peer = make(offload=False)
    try:
        peer.send(udp_frame(b"in"))
        (skb,) = dev.read_batch()
        assert skb.tobytes() == udp_frame(b"in") and skb.vnet_flags == 0
        out = SkBuff.from_bytes(partial_udp_frame(b"out"), headroom=16)
        out.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
        out.csum_start, out.csum_offset = 34, 6
        assert dev.write(out)
        sent = peer.recv(70000)
        assert sent == udp_frame(b"out") and udp_checksum_ok(sent)
        assert out.tobytes() == partial_udp_frame(b"out")  # caller's buffer untouched
        big = SkBuff.from_bytes(udp_frame(bytes(4000)))
        big.gso_type, big.gso_size = VIRTIO_NET_HDR_GSO_TCPV4, 1448
        assert not dev.write(big)
        assert dev.counters["tx_dropped_gso"] == 1
    finally:
        dev.close()
        peer.close()


def test_backlog_is_bounded_ordered_and_flushed() -> None:
    dev, peer = make(offload=True, backlog=3, sndbuf=4096)
    try:
        sent = 0
        for i in range(10_000):  # until the socket would block
            assert dev.write(SkBuff.from_bytes(udp_frame(i.to_bytes(4, "big") + bytes(500)),
                                               headroom=16))
            sent = i + 1
            if dev.backlog_len():
                break
        assert dev.backlog_len() == 1 and dev.counters["tx_backlogged"] == 1
        results = [dev.write(SkBuff.from_bytes(udp_frame((sent + k).to_bytes(4, "big")
                                                         + bytes(500)), headroom=16))
                   for k in range(4)]
        assert results == [True, True, False, False]
        assert dev.backlog_len() == 3 and dev.counters["tx_dropped_backlog_full"] == 2
        # Delivered: the frames written directly (0 .. sent-2), then the backlog in
        # order (sent-1, sent, sent+1); sent+2 and sent+3 were dropped.
        got = []
        for _ in range(sent + 2):  # drain the peer, flushing as room appears
            got.append(int.from_bytes(peer.recv(70000)[10 + 42:10 + 46], "big"))
            dev.flush_backlog()
        assert dev.flush_backlog() and dev.backlog_len() == 0
        assert got == list(range(sent + 2))
        assert dev.counters["tx_frames"] == sent + 2
    finally:
        dev.close()
        peer.close()
