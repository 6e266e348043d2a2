"""RawDevice against the kernel on a veth of the raw-socket lab (needs root): super-
segments arrive whole, the stack's own frames do not come back, frames it sends reach
the peer, a second MAC is accepted, and a fanout group puts each frame on the member
the port-sum program names (both directions of a connection on one worker)."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator

import dpkt
import pytest

from apps.lab import LabConfig, lab_down, lab_up, run_in_ns
from stack.netdev.netns import enter_netns
from stack.netdev.offload import VIRTIO_NET_HDR_GSO_UDP_L4
from stack.netdev.raw import RawDevice
from stack.netdev.steer import load_program, port_sum_program, queue_of
from stack.skbuff import SkBuff
from stack.workers import MAX_WORKERS
from tests.conftest import _in_ci, lab_unavailable_reason

pytestmark = pytest.mark.lab

ETH = dpkt.ethernet
UDP_SEGMENT = 103  # linux/udp.h: the socket option that makes UDP GSO super-datagrams
EXPERIMENTAL = 0x88B5  # IEEE local experimental ethertype: no kernel answers it
QUEUES = 3


@pytest.fixture
def raw_lab(_lab_stale_cleanup: None) -> Iterator[LabConfig]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.fail(f"CI=true and {reason}" if _in_ci() else reason)
    cfg = LabConfig.unique("rawdev")
    try:
        lab_up(cfg, raw=True)
        yield cfg
    finally:
        lab_down(cfg)


def neighbour(cfg: LabConfig, mac: bytes) -> None:
    """The client kernel's entry for 198.18.0.2 (nobody answers ARP here)."""
    run_in_ns(cfg.client_ns, "ip", "neigh", "replace", "198.18.0.2", "lladdr", mac.hex(":"),
              "dev", cfg.client_tap, "nud", "permanent", check=True)


def frames(devs: list[RawDevice], want: int, timeout: float = 5.0
           ) -> list[tuple[int, SkBuff, bytes]]:
    """(member, skb metadata, frame bytes) until ``want`` IPv4 or experimental frames
    arrived or the timeout passed (IPv6 chatter of the client kernel is skipped)."""
    got: list[tuple[int, SkBuff, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        ready, _, _ = select.select(devs, [], [], 0.1)
        for d in ready:
            for skb in d.read_batch():
                data = skb.tobytes()
                if data[12:14] in (b"\x08\x00", EXPERIMENTAL.to_bytes(2, "big")):
                    meta = SkBuff(0)
                    meta.copy_vnet_from(skb)
                    got.append((devs.index(d), meta, data))
    return got


def test_super_segments_arrive_whole_and_our_frames_stay_ours(raw_lab: LabConfig) -> None:
    dev = RawDevice.open(raw_lab.client_raw, netns=raw_lab.stack_ns)
    try:
        neighbour(raw_lab, dev.mac)
        with enter_netns(raw_lab.client_ns):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u:
            u.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1400)
            u.sendto(b"g" * 60000, ("198.18.0.2", 9))
        ((_, meta, data),) = frames([dev], 1)
        assert len(data) == 14 + 20 + 8 + 60000
        assert (meta.gso_type, meta.gso_size) == (VIRTIO_NET_HDR_GSO_UDP_L4, 1400)
        # A frame the stack sends reaches the peer and is not read back here.
        with enter_netns(raw_lab.client_ns):
            tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(EXPERIMENTAL))
        with tap:
            tap.bind((raw_lab.client_tap, EXPERIMENTAL))
            tap.settimeout(5)
            frame = b"\xff" * 6 + dev.mac + EXPERIMENTAL.to_bytes(2, "big") + b"hello".ljust(46)
            assert dev.write(SkBuff.from_bytes(frame, headroom=16))
            assert tap.recv(2048) == frame
        assert frames([dev], 1, timeout=0.5) == []
        assert dev.counters["tx_frames"] == 1
    finally:
        dev.close()


def test_a_second_mac_is_accepted_and_others_are_counted(raw_lab: LabConfig) -> None:
    ours = b"\x02\x00\x5e\x10\x00\x02"
    dev = RawDevice.open(raw_lab.client_raw, netns=raw_lab.stack_ns, mac=ours)
    try:
        assert dev.mac == ours
        with enter_netns(raw_lab.client_ns):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u:
            neighbour(raw_lab, ours)
            u.sendto(b"to the stack", ("198.18.0.2", 9))
            assert len(frames([dev], 1)) == 1
            neighbour(raw_lab, b"\x02\x00\x5e\x10\x00\x09")  # someone else's MAC
            u.sendto(b"to another host", ("198.18.0.2", 9))
            deadline = time.monotonic() + 5
            while dev.counters["rx_dropped_other_host"] == 0:
                assert time.monotonic() < deadline
                select.select([dev], [], [], 0.1)
                assert dev.read_batch() == []
    finally:
        dev.close()


def check_steering(cfg: LabConfig, devs: list[RawDevice], first_port: int) -> None:
    """24 UDP flows from the client kernel: each reaches the member queue_of names."""
    sent = []
    socks: list[socket.socket] = []
    try:
        with enter_netns(cfg.client_ns):
            for i in range(24):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("198.18.0.1", 0))
                dport = first_port + 7 * i
                s.sendto(b"steer me", ("198.18.0.2", dport))
                sent.append((s.getsockname()[1], dport))
        seen: dict[tuple[int, int], set[int]] = {}
        for member, _meta, data in frames(devs, len(sent)):
            ip = ETH.Ethernet(data).data
            if isinstance(ip.data, dpkt.udp.UDP):
                seen.setdefault((ip.data.sport, ip.data.dport), set()).add(member)
        for sport, dport in sent:
            assert seen.get((sport, dport)) == {queue_of(sport, dport, QUEUES)}, \
                (sport, dport, seen.get((sport, dport)))
        assert {queue_of(s, d, QUEUES) for s, d in sent} == set(range(QUEUES))
    finally:
        for s in socks:
            s.close()


def test_a_fanout_group_steers_by_port_sum_also_after_a_link_flap(raw_lab: LabConfig
                                                                   ) -> None:
    devs = RawDevice.open_queues(raw_lab.client_raw, QUEUES, netns=raw_lab.stack_ns)
    try:
        neighbour(raw_lab, devs[0].mac)
        check_steering(raw_lab, devs, 2000)
        # A frame the stack sends on any member is not read back by the group.
        assert devs[2].write(SkBuff.from_bytes(
            b"\xff" * 6 + devs[2].mac + EXPERIMENTAL.to_bytes(2, "big") + bytes(46),
            headroom=16))
        assert frames(devs, 1, timeout=0.5) == []
        # Down and up: the kernel takes the members out of the group and puts them
        # back; the workers' order must survive that.
        for state in ("down", "up"):
            run_in_ns(raw_lab.stack_ns, "ip", "link", "set", "dev", raw_lab.client_raw,
                      state, check=True)
        neighbour(raw_lab, devs[0].mac)  # the client flushed it with the carrier
        check_steering(raw_lab, devs, 3000)
        assert all(d.counters["rx_link_down"] == 1 for d in devs)
    finally:
        for d in devs:
            d.close()


def test_the_verifier_accepts_the_fanout_program_for_every_worker_count() -> None:
    for n in range(1, MAX_WORKERS + 1):
        os.close(load_program(port_sum_program(n, at_network_header=True)))


def test_frames_the_kernel_drops_on_a_full_socket_are_counted(raw_lab: LabConfig) -> None:
    dev = RawDevice.open(raw_lab.client_raw, netns=raw_lab.stack_ns)
    try:
        dev.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few frames
        neighbour(raw_lab, dev.mac)
        with enter_netns(raw_lab.client_ns):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u:
            for _ in range(200):  # nobody reads meanwhile
                u.sendto(b"f" * 1000, ("198.18.0.2", 9))
        assert 0 < dev.kernel_drops() <= 200
        assert dev.counters["rx_dropped_socket_full"] > 0
        assert dev.kernel_drops() == 0  # the kernel's count starts again at each read
    finally:
        dev.close()
