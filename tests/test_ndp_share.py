"""NDP shared through worker 0 (stack/workers.py ArpShare, Ipv6Layer.learn_ndp,
NeighborDiscovery.dad_elsewhere), sans-I/O: worker 0 copies NS, NA and RA to the
others, which learn from the copies without answering, solicit their own neighbours,
and leave DAD to worker 0."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from stack.addrconf import AddrState
from stack.neigh import NeighState
from stack.skbuff import SkBuff
from stack.workers import ArpShare, Seat
from tests.test_core_ipv6 import (
    ALL_NODES,
    OTHER_MAC,
    OWN,
    PEER,
    PEER_MAC,
    Lab6,
    dad_ns,
    eth,
    icmp6,
    ip6,
    mmac,
    na_frame,
    ns_frame,
    sn,
)


def other_worker() -> Lab6:
    """A worker other than 0: its ND leaves DAD to worker 0 before any address."""
    lab = Lab6(add=False)
    lab.stack.ip6.nd.dad_elsewhere = True
    lab.ll = lab.stack.ip6.enable(lab.iface, lab.net.now)
    lab.addr = lab.stack.ip6.add_address(lab.iface, "2001:2:0:1::2/64", lab.net.now)
    return lab


def learn(lab: Lab6, frame: bytes) -> None:
    lab.stack.ip6.learn_ndp(lab.iface, SkBuff.from_bytes(frame, headroom=128), lab.net.now)
    lab.run()


def test_a_worker_other_than_0_sends_no_dad_probe_and_its_addresses_pass_dad():
    lab = other_worker()
    assert lab.addr.state is AddrState.TENTATIVE
    assert lab.settle() == []
    assert lab.ll.state is AddrState.PREFERRED and lab.addr.state is AddrState.PREFERRED


def test_a_copied_ns_teaches_the_sender_without_an_answer():
    lab = other_worker()
    lab.settle()
    learn(lab, ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC))
    assert lab.probe.take() == []       # worker 0 answered it
    n = lab.stack.ip6.cache.get(lab.iface, PEER)
    assert n.mac == PEER_MAC and n.state is NeighState.STALE


def test_copies_that_show_a_duplicate_mark_the_tentative_address():
    lab = other_worker()
    learn(lab, na_frame(OWN, ALL_NODES, OWN, mmac(ALL_NODES), 0x20, tll=OTHER_MAC,
                        eth_src=OTHER_MAC))
    assert lab.addr.state is AddrState.DUPLICATE
    lab2 = other_worker()
    learn(lab2, dad_ns(OTHER_MAC, OWN))
    assert lab2.addr.state is AddrState.DUPLICATE
    assert lab.probe.take() == lab2.probe.take() == []


def test_a_copied_echo_request_is_not_answered():
    lab = other_worker()
    lab.settle()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x01ping")
    learn(lab, eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    assert lab.probe.take() == []
    assert lab.stack.ip6.cache.get(lab.iface, PEER) is None


def test_worker_0_copies_arp_and_ndp_only_and_the_other_learns():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    lab = other_worker()
    lab.settle()
    try:
        zero = ArpShare(SimpleNamespace(stack=None, driver=None),
                        Seat(0, 2, [], [], arp_socks=[a]))
        ns = ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC)
        echo = eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, icmp6(PEER, OWN, 128, 0,
                                                                bytes(4)), hlim=64))
        tcp = eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 6, bytes(20), hlim=64))
        arp = lab.mac + PEER_MAC + b"\x08\x06" + bytes(28)
        for frame in (ns, echo, tcp, arp):
            zero._tee(lab.iface, SkBuff.from_bytes(frame, headroom=64))
        assert zero.counters["ndp_shared"] == 1 and zero.counters["arp_shared"] == 1
        pokes = []
        driver = SimpleNamespace(now=lambda: lab.net.now, poke=lambda: pokes.append(1))
        one = ArpShare(SimpleNamespace(stack=lab.stack, driver=driver),
                       Seat(1, 2, [], [], arp_socks=[b]))
        one._on_readable(b)
        assert one.counters["ndp_learned"] == 1 and one.counters["arp_learned"] == 1
        assert lab.stack.ip6.cache.get(lab.iface, PEER).mac == PEER_MAC
        assert pokes
    finally:
        a.close()
        b.close()
