"""The steering program against the kernel: which queue of a multiqueue TAP each frame
the kernel sends reaches (needs root; stack/netdev/steer.py).

The test opens three queues of the lab's client TAP, attaches the program, and makes
the kernel in the client namespace send UDP datagrams and TCP SYNs from and to chosen
ports, an ICMP port-unreachable quoting one of "our" datagrams, and an ARP request.
Each must arrive on the queue that :func:`queue_of` names (ARP on queue 0).
"""

from __future__ import annotations

import os
import select
import socket
import time

import dpkt
import pytest

from apps.lab import LabConfig, lab_status, run_in_ns
from stack.netdev.netns import enter_netns
from stack.netdev.steer import attach_steering, load_program, port_sum_program, queue_of
from stack.netdev.tap import TapDevice
from stack.skbuff import SkBuff
from stack.workers import MAX_WORKERS
from tests.lab.test_tap import GW_IP, GW_MAC, HOST_IP, tap_mac

pytestmark = pytest.mark.lab

QUEUES = 3
ETH = dpkt.ethernet


def open_steered(cfg: LabConfig) -> list[TapDevice]:
    queues = TapDevice.open_queues(cfg.client_tap, QUEUES, netns=cfg.client_ns)
    try:
        attach_steering(queues[0].fileno(), QUEUES)
        deadline = time.monotonic() + 10
        while lab_status(cfg)["client"]["state"] != "UP":
            assert time.monotonic() < deadline, "TAP link did not come up within 10 s"
            time.sleep(0.05)
        for q in queues:
            q.read_batch()  # whatever the kernel sent while the link came up
    except BaseException:
        for q in queues:
            q.close()
        raise
    return queues


def collect(queues: list[TapDevice], want: int, timeout: float = 5.0
            ) -> list[tuple[int, ETH.Ethernet]]:
    """(queue index, parsed frame) for frames read until ``want`` IPv4/ARP frames
    arrived (IPv6 chatter is ignored)."""
    got: list[tuple[int, ETH.Ethernet]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        ready, _, _ = select.select(queues, [], [], 0.1)
        for q in ready:
            for skb in q.read_batch():
                eth = ETH.Ethernet(skb.tobytes())
                if eth.type in (ETH.ETH_TYPE_IP, ETH.ETH_TYPE_ARP):
                    got.append((queues.index(q), eth))
    return got


def static_gateway(cfg: LabConfig, present: bool) -> None:
    if present:
        run_in_ns(cfg.client_ns, "ip", "neigh", "replace", "198.18.0.2", "lladdr",
                  GW_MAC.hex(":"), "dev", cfg.client_tap, "nud", "permanent", check=True)
    else:
        run_in_ns(cfg.client_ns, "ip", "neigh", "del", "198.18.0.2", "dev", cfg.client_tap,
                  check=True)


def test_udp_and_tcp_frames_reach_the_queue_of_their_ports(lab: LabConfig) -> None:
    static_gateway(lab, True)
    queues = open_steered(lab)
    sent: list[tuple[int, int]] = []
    socks = []
    try:
        with enter_netns(lab.client_ns):
            for i in range(24):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("198.18.0.1", 0))
                dport = 2000 + 7 * i
                s.sendto(b"steer me", ("198.18.0.2", dport))
                sent.append((s.getsockname()[1], dport))
            for i in range(6):
                t = socket.socket()
                socks.append(t)
                t.setblocking(False)
                t.bind(("198.18.0.1", 0))
                dport = 1080 + i
                try:
                    t.connect(("198.18.0.2", dport))
                except BlockingIOError:
                    pass
                sent.append((t.getsockname()[1], dport))
        got = collect(queues, len(sent))
        seen = {}
        for qi, eth in got:
            ip = eth.data
            if isinstance(ip.data, (dpkt.udp.UDP, dpkt.tcp.TCP)):
                seen.setdefault((ip.data.sport, ip.data.dport), set()).add(qi)
        for sport, dport in sent:
            assert seen.get((sport, dport)) == {queue_of(sport, dport, QUEUES)}, \
                (sport, dport, seen.get((sport, dport)))
        # the hash spreads them: every queue got some of the 30 flows
        assert {queue_of(s, d, QUEUES) for s, d in sent} == set(range(QUEUES))
    finally:
        for s in socks:
            s.close()
        for q in queues:
            q.close()


def test_icmp_errors_follow_the_quoted_ports_and_arp_goes_to_queue_zero(lab: LabConfig
                                                                       ) -> None:
    static_gateway(lab, True)
    queues = open_steered(lab)
    try:
        # A datagram from the gateway to a closed port of the host: the kernel's
        # port unreachable quotes it and must reach the queue of its ports.
        sport, dport = 40001, 9
        udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"anyone?")
        udp.ulen = 8 + len(udp.data)
        ip = dpkt.ip.IP(src=GW_IP, dst=HOST_IP, p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
        ip.len = 20 + udp.ulen
        frame = bytes(ETH.Ethernet(dst=tap_mac(lab), src=GW_MAC, type=ETH.ETH_TYPE_IP,
                                   data=ip))
        assert queues[0].write(SkBuff.from_bytes(frame, headroom=16))
        got = collect(queues, 1)
        icmps = [(qi, eth) for qi, eth in got if isinstance(eth.data, dpkt.ip.IP)
                 and isinstance(eth.data.data, dpkt.icmp.ICMP)]
        assert icmps, got
        qi, eth = icmps[0]
        assert eth.data.data.type == dpkt.icmp.ICMP_UNREACH
        assert queue_of(sport, dport, QUEUES) != 0, "pick ports off queue 0"
        assert qi == queue_of(sport, dport, QUEUES)
        # Without the static entry the kernel asks for the gateway's MAC: queue 0.
        static_gateway(lab, False)
        with enter_netns(lab.client_ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.sendto(b"x", ("198.18.0.2", 5000))
            arps = [qi for qi, eth in collect(queues, 1) if eth.type == ETH.ETH_TYPE_ARP]
        assert arps and set(arps) == {0}
    finally:
        for q in queues:
            q.close()


def test_the_kernel_verifier_accepts_the_program_for_every_worker_count() -> None:
    for n in range(1, MAX_WORKERS + 1):
        os.close(load_program(port_sum_program(n)))
        os.close(load_program(port_sum_program(n, at_network_header=True)))
