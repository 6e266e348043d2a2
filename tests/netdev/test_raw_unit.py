"""RawDevice framing, filtering, link events and backlog, without a packet socket.

A SOCK_SEQPACKET socket pair keeps message boundaries (and honours MSG_TRUNC) as a
packet socket does, so the device's read and write paths run unchanged against the
test's end of the pair; a subclass of the socket stands in for the kernel's link
events (ENETDOWN, an unbound socket after the interface is deleted).
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator

import pytest
from netdev_frames import MAC_B, udp_frame

from stack.netdev.link import DeviceGone
from stack.netdev.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VNET
from stack.netdev.raw import FRAME_MAX, HEADROOM, RawDevice
from stack.skbuff import SkBuff

OTHER = b"\x02\x00\x00\x00\x00\x0c"
BROADCAST = b"\xff" * 6
NONE = VNET.pack(0, 0, 0, 0, 0, 0)


class LinkSocket(socket.socket):
    """A socket whose next reads can fail like a packet socket's on a link event, and
    whose bound interface can vanish (getsockname then names none, as the kernel's)."""

    errors: list[int]
    bound: str

    def recv_into(self, buffer, nbytes=0, flags=0):
        if self.errors:
            raise OSError(self.errors.pop(0), "link event")
        return super().recv_into(buffer, nbytes, flags)

    def getsockname(self):
        return (self.bound, 3, 0, 1, MAC_B)


def make(offload: bool = True, batch: int = 4, backlog: int = 3,
         sndbuf: int | None = None) -> tuple[RawDevice, socket.socket, LinkSocket]:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = LinkSocket(fileno=ours.detach())
    link.errors, link.bound = [], "veth0"
    link.setblocking(False)
    peer.settimeout(5)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    if sndbuf:
        link.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    dev = RawDevice(link, "veth0", mac=MAC_B, offload=offload, mtu=1500, batch=batch,
                    backlog=backlog)
    return dev, peer, link


@pytest.fixture
def pair() -> Iterator[tuple[RawDevice, socket.socket, LinkSocket]]:
    dev, peer, link = make()
    yield dev, peer, link
    dev.close()
    peer.close()


def to(dst: bytes, frame: bytes) -> bytes:
    """``frame`` addressed to ``dst``."""
    return dst + frame[6:]


def test_read_parses_vnet_header_of_a_super_segment(pair) -> None:
    dev, peer, _ = pair
    frame = udp_frame(b"a" * 60000)
    peer.send(VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16)
              + frame)
    (skb,) = dev.read_batch()
    assert skb.data == HEADROOM and skb.tobytes() == frame
    assert (skb.vnet_flags, skb.gso_type, skb.hdr_len, skb.gso_size,
            skb.csum_start, skb.csum_offset) == (1, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16)
    assert dev.counters["rx_frames"] == 1 and dev.counters["rx_bytes"] == len(frame)
    assert dev.read_batch() == []


def test_frames_for_other_macs_are_counted_and_dropped(pair) -> None:
    dev, peer, _ = pair
    frame = udp_frame(b"x")
    assert frame[:6] == MAC_B
    peer.send(NONE + to(OTHER, frame))       # another host's unicast: dropped
    peer.send(NONE + frame)                   # ours
    peer.send(NONE + to(BROADCAST, frame))    # broadcast: the core decides
    peer.send(NONE + to(b"\x01\x00\x5e\x00\x00\x01", frame))  # multicast: likewise
    got = [s.tobytes()[:6] for s in dev.read_batch()]
    assert got == [MAC_B, BROADCAST, b"\x01\x00\x5e\x00\x00\x01"]
    assert dev.counters["rx_dropped_other_host"] == 1 and dev.counters["rx_frames"] == 3


def test_a_stack_mac_other_than_the_interface_filters_on_that_one() -> None:
    dev, peer, _ = make()
    dev.mac = OTHER
    try:
        peer.send(NONE + udp_frame(b"x"))
        peer.send(NONE + to(OTHER, udp_frame(b"y")))
        assert [s.tobytes()[-1:] for s in dev.read_batch()] == [b"y"]
        assert dev.counters["rx_dropped_other_host"] == 1
    finally:
        dev.close()
        peer.close()


def test_bad_input_is_counted_not_raised(pair) -> None:
    dev, peer, _ = pair
    frame = udp_frame(b"x")
    peer.send(VNET.pack(0x40, 0, 0, 0, 0, 0) + frame)  # unknown flag
    peer.send(VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 200) + frame)
    peer.send(VNET.pack(0, VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 0, 0) + frame)  # no gso_size
    peer.send(b"\x00" * 6)  # a truncated vnet header
    peer.send(NONE + frame[:10])  # a runt behind a whole header
    peer.send(NONE + bytes(FRAME_MAX + 1))  # too big: MSG_TRUNC gives its real length
    peer.send(NONE + frame)
    got: list[bytes] = []
    for _ in range(3):
        got += [s.tobytes() for s in dev.read_batch()]
    assert got == [frame]
    c = dev.counters
    assert (c["rx_dropped_bad_vnet"], c["rx_errors"], c["rx_dropped_oversize"]) == (4, 1, 1)


def test_write_sends_vnet_header_and_frame(pair) -> None:
    dev, peer, _ = pair
    frame = udp_frame(b"payload")
    skb = SkBuff.from_bytes(frame, headroom=32)
    skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV4, 1448
    assert dev.write(skb)
    assert peer.recv(70000) == VNET.pack(0, VIRTIO_NET_HDR_GSO_TCPV4, 0, 1448, 0, 0) + frame
    assert dev.counters["tx_frames"] == 1


def test_plain_mode_has_no_vnet_header() -> None:
    dev, peer, _ = make(offload=False)
    try:
        peer.send(udp_frame(b"in"))
        (skb,) = dev.read_batch()
        assert skb.tobytes() == udp_frame(b"in") and skb.vnet_flags == 0
        assert dev.write(SkBuff.from_bytes(udp_frame(b"out"), headroom=16))
        assert peer.recv(70000) == udp_frame(b"out")
    finally:
        dev.close()
        peer.close()


def test_link_down_is_logged_once_and_frames_flow_after_it(pair, caplog) -> None:
    dev, peer, link = pair
    link.errors = [errno.ENETDOWN]
    assert dev.read_batch() == []
    assert dev.link_down and dev.counters["rx_link_down"] == 1
    link.errors = [errno.ENETDOWN]  # the kernel reports each down event once
    assert dev.read_batch() == []
    downs = [r for r in caplog.records if "went down" in r.getMessage()]
    assert len(downs) == 1
    peer.send(NONE + udp_frame(b"back"))
    assert len(dev.read_batch()) == 1
    assert not dev.link_down
    assert any("back" in r.getMessage() for r in caplog.records)


def test_an_interface_that_disappears_raises_device_gone(pair) -> None:
    dev, _peer, link = pair
    link.bound = ""  # the kernel unbound the socket: no interface any more
    link.errors = [errno.ENETDOWN]
    with pytest.raises(DeviceGone, match="veth0 disappeared"):
        dev.read_batch()
    assert dev.gone and dev.counters["rx_link_down"] == 1


def test_other_read_errors_are_counted(pair) -> None:
    dev, peer, link = pair
    link.errors = [errno.EIO]
    assert dev.read_batch() == []
    assert dev.counters["rx_errors"] == 1
    peer.send(NONE + udp_frame(b"x"))
    assert len(dev.read_batch()) == 1


def test_transmit_errors_on_a_gone_link_are_counted_as_link_errors() -> None:
    dev, peer, link = make()
    try:
        peer.close()  # writes fail from now on (EPIPE/ECONNREFUSED), never block
        link.bound = ""
        assert not dev.write(SkBuff.from_bytes(udp_frame(b"x"), headroom=16))
        assert dev.counters["tx_errors"] == 1 and dev.counters["tx_link_errors"] == 1
    finally:
        dev.close()


def test_backlog_is_the_taps_bounded_and_counted_one() -> None:
    dev, peer, _ = make(backlog=2, sndbuf=4096)
    try:
        for i in range(10_000):  # until the socket would block
            assert dev.write(SkBuff.from_bytes(udp_frame(i.to_bytes(4, "big") + bytes(500)),
                                               headroom=16))
            if dev.backlog_len():
                break
        more = [dev.write(SkBuff.from_bytes(udp_frame(bytes(504)), headroom=16))
                for _ in range(3)]
        assert more == [True, False, False]
        assert dev.counters["tx_dropped_backlog_full"] == 2
        for _ in range(10_000):  # bounded: drain the peer while flushing
            if dev.flush_backlog():
                break
            peer.recv(70000)
        assert dev.backlog_len() == 0
    finally:
        dev.close()
        peer.close()


def test_the_loop_descriptor_reports_frames_and_room_for_the_backlog() -> None:
    dev, peer, _ = make(backlog=4, sndbuf=4096)
    try:
        assert dev.fileno() != dev.sock.fileno()
        assert select.select([dev], [], [], 0)[0] == []
        peer.send(NONE + udp_frame(b"x"))
        assert select.select([dev], [], [], 1)[0] == [dev]
        assert len(dev.read_batch()) == 1
        for _ in range(10_000):  # until the socket would block
            dev.write(SkBuff.from_bytes(udp_frame(bytes(500)), headroom=16))
            if dev.backlog_len():
                break
        assert select.select([dev], [], [], 0)[0] == []  # no room yet: not woken
        for _ in range(10_000):  # bounded: the peer reads until the socket has room
            peer.recv(70000)
            if select.select([dev], [], [], 0)[0]:
                break
        assert dev.read_batch() == []  # flushes the backlog on the way
        assert dev.backlog_len() == 0
        assert select.select([dev], [], [], 0)[0] == []  # and stops watching for room
    finally:
        dev.close()
        peer.close()
