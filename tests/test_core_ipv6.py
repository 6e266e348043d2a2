"""IPv6 on the simulated link (stack/ip6.py through the core): DAD, NS/NA, ping6,
ICMPv6 errors, fragments, bad input. Frames are built here by hand (with a checksum
computed here) and compared whole."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.addrconf import AddrState
from stack.sim import Probe, SimNetwork
from stack.wire.ipv6 import ip6_bytes

PEER_MAC = b"\x02\x00\x00\x00\x00\xa1"
OTHER_MAC = b"\x02\x00\x00\x00\x00\xa2"
OWN = ip6_bytes("2001:2:0:1::2")
PEER = ip6_bytes("2001:2:0:1::1")
UNSPEC = bytes(16)
ALL_NODES = ip6_bytes("ff02::1")


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp6(src: bytes, dst: bytes, typ: int, code: int, rest: bytes) -> bytes:
    body = bytes((typ, code, 0, 0)) + rest
    c = csum(src + dst + struct.pack("!I3xB", len(body), 58) + body)
    return body[:2] + struct.pack("!H", c) + body[4:]


def ip6(src: bytes, dst: bytes, nxt: int, payload: bytes, hlim: int = 255,
        plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return struct.pack("!IHBB", 6 << 28, plen, nxt, hlim) + src + dst + payload


def eth(dst: bytes, src: bytes, packet: bytes) -> bytes:
    return dst + src + b"\x86\xdd" + packet


def sn(addr: bytes) -> bytes:
    return ip6_bytes("ff02::1:ff00:0")[:13] + addr[13:]


def mmac(addr: bytes) -> bytes:
    return b"\x33\x33" + addr[12:]


def ns_frame(src, dst, target, mac_dst, sll=None, hlim=255, eth_src=PEER_MAC) -> bytes:
    opts = b"\x01\x01" + sll if sll else b""
    return eth(mac_dst, eth_src, ip6(src, dst, 58, icmp6(src, dst, 135, 0,
                                                          bytes(4) + target + opts), hlim))


def na_frame(src, dst, target, mac_dst, flags, tll=None, eth_src=PEER_MAC) -> bytes:
    opts = b"\x02\x01" + tll if tll else b""
    return eth(mac_dst, eth_src, ip6(src, dst, 58, icmp6(src, dst, 136, 0,
                                                          bytes((flags, 0, 0, 0)) + target
                                                          + opts)))


class Lab6:
    """A stack with one probe link, IPv4 198.18.0.2/24 and IPv6 2001:2:0:1::2/64."""

    def __init__(self, *, add: bool = True, burst: float = 50.0) -> None:
        self.net = SimNetwork(seed=3)
        self.stack = self.net.add_host("s")
        self.stack.ip6.icmp_bucket.burst = self.stack.ip6.icmp_bucket.tokens = burst
        self.probe: Probe = self.net.add_probe(self.stack, "198.18.0.2/24")
        (self.iface,) = self.stack.interfaces
        self.net.start()
        self.net.run(0.01)
        assert len(self.probe.take()) == 1      # the gratuitous ARP
        self.ll = None
        if add:
            self.ll = self.stack.ip6.enable(self.iface, self.net.now)
            self.addr = self.stack.ip6.add_address(self.iface, "2001:2:0:1::2/64",
                                                   self.net.now)

    @property
    def mac(self) -> bytes:
        return self.iface.mac

    def run(self, t: float = 0.01) -> None:
        self.net.run(t)

    def send(self, frame: bytes) -> None:
        self.probe.send(frame)
        self.run()

    def settle(self) -> list[bytes]:
        """Let DAD finish; return what the stack sent meanwhile."""
        self.run(3.0)
        return self.probe.take()

    def learn_peer(self) -> bytes:
        """The peer asks for the stack's address (the stack learns the peer); returns
        the stack's answer."""
        self.send(ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC))
        (na,) = self.probe.take()
        return na


def dad_ns(mac: bytes, target: bytes) -> bytes:
    return eth(mmac(sn(target)), mac, ip6(UNSPEC, sn(target), 58,
                                          icmp6(UNSPEC, sn(target), 135, 0,
                                                bytes(4) + target)))


def test_dad_on_address_add_then_addresses_assigned():
    lab = Lab6()
    ll, addr = lab.ll, lab.addr
    assert ll.addr[:8] == ip6_bytes("fe80::")[:8]
    assert ll.state is AddrState.TENTATIVE and addr.state is AddrState.TENTATIVE
    sent = lab.settle()
    assert sorted(sent) == sorted([dad_ns(lab.mac, ll.addr), dad_ns(lab.mac, OWN)])
    assert ll.state is AddrState.PREFERRED and addr.state is AddrState.PREFERRED
    lab.run(30.0)
    assert lab.probe.take() == []       # one probe each (DupAddrDetectTransmits = 1)


def test_ns_answered_with_na_and_sender_learnt():
    lab = Lab6()
    lab.settle()
    na = lab.learn_peer()
    want = na_frame(OWN, PEER, OWN, PEER_MAC, 0x60, tll=lab.mac, eth_src=lab.mac)
    assert na == want
    n = lab.stack.ip6.cache.get(lab.iface, PEER)
    assert n.mac == PEER_MAC and n.state.value == "stale"
    assert lab.stack.counters["icmp6_in_135"] == 1


def test_ping6_answered():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    req = icmp6(PEER, OWN, 128, 0, b"\x12\x34\x00\x09" + b"x" * 100)
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    (reply,) = lab.probe.take()
    want = eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(OWN, PEER, 129, 0,
                                                           b"\x12\x34\x00\x09" + b"x" * 100),
                                      hlim=64))
    assert reply == want
    assert lab.stack.counters["icmp6_echo_replies"] == 1


def test_ping6_resolves_the_peer_first():
    lab = Lab6()
    lab.settle()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x01ping")
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    (ns,) = lab.probe.take()
    assert ns == ns_frame(OWN, sn(PEER), PEER, mmac(sn(PEER)), sll=lab.mac, eth_src=lab.mac)
    lab.send(na_frame(PEER, OWN, PEER, lab.mac, 0x60, tll=PEER_MAC))
    (reply,) = lab.probe.take()
    assert reply == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 129, 0, b"\x00\x01\x00\x01ping"), hlim=64))
    assert lab.stack.ip6.cache.get(lab.iface, PEER).state.value == "reachable"


def test_duplicate_detected_and_address_not_used():
    lab = Lab6()
    # Another node already holds 2001:2:0:1::2: it answers the DAD probe.
    lab.run(0.001)
    lab.send(na_frame(OWN, ALL_NODES, OWN, mmac(ALL_NODES), 0x20, tll=OTHER_MAC,
                      eth_src=OTHER_MAC))
    assert lab.addr.state is AddrState.DUPLICATE
    assert lab.stack.counters["ipv6_dad_duplicate"] == 1
    lab.settle()
    assert lab.stack.ip6.addresses.assigned(OWN) is None
    # Never answered for, never used.
    lab.send(ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC))
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x01")
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    assert lab.probe.take() == []
    assert lab.stack.counters["drop.ipv6_not_for_us"] == 2


def test_other_nodes_dad_for_our_tentative_address_makes_it_duplicate():
    lab = Lab6()
    lab.send(dad_ns(OTHER_MAC, OWN))
    assert lab.addr.state is AddrState.DUPLICATE


def test_dad_probe_for_our_address_answered_to_all_nodes():
    lab = Lab6()
    lab.settle()
    lab.send(dad_ns(PEER_MAC, OWN))
    (na,) = lab.probe.take()
    assert na == na_frame(OWN, ALL_NODES, OWN, mmac(ALL_NODES), 0x20, tll=lab.mac,
                          eth_src=lab.mac)
    assert len(lab.stack.ip6.cache) == 0


def test_unsolicited_na_creates_no_entry():
    lab = Lab6()
    lab.settle()
    lab.send(na_frame(PEER, ALL_NODES, PEER, mmac(ALL_NODES), 0x20, tll=PEER_MAC))
    assert lab.stack.ip6.cache.get(lab.iface, PEER) is None and len(lab.stack.ip6.cache) == 0
    assert lab.probe.take() == []


@pytest.mark.parametrize(("frame", "counter"), [
    (ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC, hlim=254), "ndp_bad_hop_limit"),
    (ns_frame(PEER, sn(OWN), OWN + b"\x01\x00" + PEER_MAC, mmac(sn(OWN))), "ndp_bad_option"),
    (ns_frame(UNSPEC, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC), "ndp_dad_with_lladdr"),
    (na_frame(PEER, ALL_NODES, ALL_NODES, mmac(ALL_NODES), 0x20), "ndp_multicast_target"),
    # A link-layer address that is not the frame's sender's: a spoof.
    (ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=OTHER_MAC), "ndp_lladdr_mismatch"),
])
def test_bad_ndp_is_counted_and_ignored(frame, counter):
    lab = Lab6()
    lab.settle()
    lab.send(frame)
    assert lab.probe.take() == []
    assert lab.stack.counters[counter] == 1 and len(lab.stack.ip6.cache) == 0


def test_tentative_address_gets_no_echo_reply():
    lab = Lab6()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x01")
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    assert [f for f in lab.probe.take() if f[54] == 129] == []
    assert lab.stack.counters["ipv6_to_tentative"] == 1


def _errors(lab: Lab6) -> list[bytes]:
    return [f for f in lab.probe.take() if f[20] == 58 and f[54] < 128]


def test_unknown_option_gets_parameter_problem_and_errors_are_rate_limited():
    lab = Lab6(burst=2.0)
    lab.settle()
    lab.learn_peer()
    # Destination options with an option of type 0x9e (action 10: answer).
    dopt = bytes((59, 0, 0x9E, 2, 0, 0, 1, 0))
    bad = ip6(PEER, OWN, 60, dopt, hlim=64)
    for _ in range(3):
        lab.probe.send(eth(lab.mac, PEER_MAC, bad))
    lab.run()
    errs = _errors(lab)
    quoted = bad
    want = eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 4, 2, struct.pack("!I", 42) + quoted), hlim=64))
    assert errs == [want, want]
    c = lab.stack.counters
    assert c["drop.ipv6_unknown_option"] == 3 and c["icmp6_error_ratelimited"] == 1


def test_unknown_next_header_parameter_problem_code_1():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    tcp = ip6(PEER, OWN, 6, bytes(20), hlim=64)        # no TCP over IPv6 yet
    lab.send(eth(lab.mac, PEER_MAC, tcp))
    (err,) = _errors(lab)
    assert err == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 4, 1, struct.pack("!I", 6) + tcp), hlim=64))


def udp6(payload: bytes, checksum: int | None = None) -> bytes:
    hdr = struct.pack("!HHHH", 4096, 8192, 8 + len(payload), 0)
    if checksum is None:
        checksum = csum(PEER + OWN + struct.pack("!I3xB", 8 + len(payload), 17) + hdr
                        + payload) or 0xFFFF
    return ip6(PEER, OWN, 17, hdr[:6] + struct.pack("!H", checksum) + payload, hlim=64)


def test_udp_gets_port_unreachable_unless_malformed():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    good = udp6(b"hi")
    lab.send(eth(lab.mac, PEER_MAC, good))
    (err,) = _errors(lab)
    assert err == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 1, 4, bytes(4) + good), hlim=64))
    bad = bytearray(good)
    bad[-1] ^= 1
    for frame in (udp6(b"hi", checksum=0), bytes(bad), ip6(PEER, OWN, 17, b"\x10\x00", hlim=64),
                  ip6(PEER, OWN, 17, bytes(4) + b"\x00\x20" + bytes(4), hlim=64)):
        lab.send(eth(lab.mac, PEER_MAC, frame))
    assert _errors(lab) == []
    c = lab.stack.counters
    assert (c["udp6_no_port"], c["udp6_bad_checksum"], c["udp6_truncated"],
            c["udp6_bad_length"]) == (1, 2, 1, 1)


def test_no_error_about_an_error_or_to_multicast():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    err = icmp6(PEER, OWN, 1, 0, bytes(4) + bytes(48))
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 60, bytes((58, 0, 0x9E, 2, 0, 0, 1, 0))
                                        + err, hlim=64)))
    dopt = bytes((59, 0, 0xDE, 2, 0, 0, 1, 0))     # action 11: not to multicast
    lab.send(eth(mmac(ALL_NODES), PEER_MAC, ip6(PEER, ALL_NODES, 60, dopt, hlim=64)))
    assert _errors(lab) == []
    assert lab.stack.counters["icmp6_error_suppressed"] == 1
    assert lab.stack.counters["drop.ipv6_unknown_option"] == 2


def _frags(payload_icmp: bytes, size: int, ident: int = 5) -> list[bytes]:
    out = []
    for off in range(0, len(payload_icmp), size):
        chunk = payload_icmp[off:off + size]
        more = int(off + size < len(payload_icmp))
        fh = struct.pack("!BBHI", 58, 0, off | more, ident)
        out.append(ip6(PEER, OWN, 44, fh + chunk, hlim=64))
    return out


def test_fragmented_ping6_reassembled_and_answered():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    data = bytes(range(256)) * 4
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x07\x00\x08" + data)
    for f in reversed(_frags(req, 512)):
        lab.probe.send(eth(lab.mac, PEER_MAC, f))
    lab.run()
    (reply,) = lab.probe.take()
    assert reply == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 129, 0, b"\x00\x07\x00\x08" + data), hlim=64))
    assert len(lab.stack.ip6.reasm) == 0


def test_reassembly_timeout_sends_time_exceeded():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x07\x00\x08" + bytes(1000))
    first = _frags(req, 512)[0]
    lab.send(eth(lab.mac, PEER_MAC, first))
    lab.run(61.0)
    errs = _errors(lab)
    assert errs == [eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 3, 1, bytes(4) + first), hlim=64))]


def test_overlapping_fragments_drop_the_packet():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x07\x00\x08" + bytes(1500))
    frags = _frags(req, 512)
    lab.send(eth(lab.mac, PEER_MAC, frags[0]))
    fh = struct.pack("!BBHI", 58, 0, 504 | 1, 5)
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 44, fh + bytes(16), hlim=64)))
    for f in frags[1:]:
        lab.probe.send(eth(lab.mac, PEER_MAC, f))
    lab.run()
    assert lab.probe.take() == []
    assert lab.stack.counters["drop.frag6_overlap"] == 1


def test_malformed_ipv6_is_counted():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    cases = [
        (eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, b"", plen=8)), "ipv6_bad_payload_length"),
        (eth(lab.mac, PEER_MAC, b"\x60" + bytes(20)), "ipv6_truncated"),
        (eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 60, b"\x3b\x05" + bytes(6))),
         "ipv6_ext_truncated"),
        (eth(lab.mac, PEER_MAC, ip6(ALL_NODES, OWN, 59, b"")), "ipv6_martian_source"),
        (eth(lab.mac, PEER_MAC, ip6(PEER, ip6_bytes("2001:2:0:1::77"), 59, b"")),
         "ipv6_not_for_us"),
    ]
    for frame, reason in cases:
        lab.send(frame)
        assert lab.stack.counters["drop." + reason] == 1, reason
    bad_sum = bytearray(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, icmp6(
        PEER, OWN, 128, 0, b"\0\1\0\1"), hlim=64)))
    bad_sum[-1] ^= 1
    lab.send(bytes(bad_sum))
    assert lab.stack.counters["icmp6_bad_checksum"] == 1
    assert lab.probe.take() == []


def test_interface_without_ipv6_drops_as_before():
    lab = Lab6(add=False)
    lab.send(dad_ns(PEER_MAC, OWN))
    assert lab.stack.counters["drop.eth_ipv6_unsupported"] == 1
    assert lab.probe.take() == []


def test_ra_gives_slaac_address_on_auto_interface():
    lab = Lab6(add=False)
    ll = lab.stack.ip6.enable(lab.iface, lab.net.now, auto=True)
    sent = lab.settle()
    rs_src = ll.addr
    rs = eth(mmac(ip6_bytes("ff02::2")), lab.mac, ip6(rs_src, ip6_bytes("ff02::2"), 58, icmp6(
        rs_src, ip6_bytes("ff02::2"), 133, 0, bytes(4) + b"\x01\x01" + lab.mac)))
    assert sent == [dad_ns(lab.mac, ll.addr), rs]
    router = ip6_bytes("fe80::1")
    prefix = ip6_bytes("2001:2:0:1::")
    pi = struct.pack("!BBBBII4x", 3, 4, 64, 0xC0, 86400, 14400) + prefix
    ra = icmp6(router, ALL_NODES, 134, 0, struct.pack("!BBH", 64, 0, 1800) + bytes(8)
               + b"\x01\x01" + PEER_MAC + pi)
    lab.send(eth(mmac(ALL_NODES), PEER_MAC, ip6(router, ALL_NODES, 58, ra)))
    (slaac,) = [a for a in lab.stack.ip6.addresses.for_iface(lab.iface) if a is not ll]
    assert slaac.addr[:8] == prefix[:8] and slaac.state is AddrState.TENTATIVE
    assert lab.settle() == [dad_ns(lab.mac, slaac.addr)]
    assert slaac.state is AddrState.PREFERRED
    assert lab.stack.ip6.cache.get(lab.iface, router).is_router


def _seed_frames(mac: bytes) -> list[bytes]:
    echo = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x01" + bytes(40))
    frags = _frags(icmp6(PEER, OWN, 128, 0, b"\x00\x07\x00\x08" + bytes(600)), 312)
    return [
        eth(mac, PEER_MAC, ip6(PEER, OWN, 58, echo, hlim=64)),
        ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC),
        na_frame(PEER, OWN, PEER, mac, 0x60, tll=PEER_MAC),
        eth(mac, PEER_MAC, ip6(PEER, OWN, 0, bytes((60, 0, 1, 4, 0, 0, 0, 0))
                               + bytes((58, 0, 0xC2, 4, 0, 0, 0, 0)) + echo, hlim=64)),
        *(eth(mac, PEER_MAC, f) for f in frags),
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 200), st.integers(0, 255),
                          st.integers(0, 3)), min_size=1, max_size=12))
def test_mutated_ipv6_frames_are_counted_never_crash(edits):
    lab = Lab6()
    lab.settle()
    seeds = _seed_frames(lab.mac)
    for which, pos, value, how in edits:
        f = bytearray(seeds[which % len(seeds)])
        pos = 14 + pos % (len(f) - 14)
        if how == 0:
            f[pos] = value
        elif how == 1:
            del f[pos:]
        elif how == 2:
            f[18:20] = (value * 7).to_bytes(2, "big")      # payload length
        else:
            f[pos] ^= 1 << (value % 8)
        lab.probe.send(bytes(f))
    lab.run(1.0)
    c = lab.stack.counters
    assert c["rx_frames"] == c["rx_local"] + c["rx_dropped"] + c["rx_arp"]
    assert len(lab.stack.ip6.cache) <= lab.stack.ip6.cache.max_entries


def test_stale_neighbour_used_goes_delay_then_probes_by_unicast():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()                       # the peer's entry: STALE
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x02")
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    (reply,) = lab.probe.take()            # sent at once to the cached address
    assert reply[:6] == PEER_MAC
    n = lab.stack.ip6.cache.get(lab.iface, PEER)
    assert n.state.value == "delay"
    lab.run(5.5)
    (probe,) = lab.probe.take()
    assert probe == ns_frame(OWN, PEER, PEER, PEER_MAC, sll=lab.mac, eth_src=lab.mac)
    assert n.state.value == "probe"
    lab.send(na_frame(PEER, OWN, PEER, lab.mac, 0x60, tll=PEER_MAC))
    assert n.state.value == "reachable"


def test_waiting_reply_flushed_when_the_peer_solicits_us():
    lab = Lab6()
    lab.settle()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x03")
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    (ns,) = lab.probe.take()
    assert ns[:6] == mmac(sn(PEER))
    lab.send(ns_frame(PEER, sn(OWN), OWN, mmac(sn(OWN)), sll=PEER_MAC))
    na, reply = lab.probe.take()
    assert na[54] == 136 and reply == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, 58, icmp6(
        OWN, PEER, 129, 0, b"\x00\x01\x00\x03"), hlim=64))


def test_unresolved_peer_gives_up_after_three_solicitations():
    lab = Lab6()
    lab.settle()
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x01\x00\x04")
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, 58, req, hlim=64)))
    lab.run(5.0)
    sent = lab.probe.take()
    assert sent == [ns_frame(OWN, sn(PEER), PEER, mmac(sn(PEER)), sll=lab.mac,
                             eth_src=lab.mac)] * 3
    assert lab.stack.ip6.cache.get(lab.iface, PEER) is None
    assert lab.stack.counters["drop.ndp_unresolved"] == 1


def test_unicast_ns_without_lladdr_answered_through_the_cache():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    lab.send(ns_frame(PEER, OWN, OWN, lab.mac))
    (na,) = lab.probe.take()
    assert na == na_frame(OWN, PEER, OWN, PEER_MAC, 0x60, tll=lab.mac, eth_src=lab.mac)


def test_big_ping6_reply_is_fragmented():
    lab = Lab6()
    lab.settle()
    lab.learn_peer()
    data = bytes(range(256)) * 12
    req = icmp6(PEER, OWN, 128, 0, b"\x00\x09\x00\x01" + data)
    for f in _frags(req, 1448):
        lab.probe.send(eth(lab.mac, PEER_MAC, f))
    lab.run()
    replies = lab.probe.take()
    assert len(replies) == 3 and all(len(f) <= 14 + 1500 for f in replies)
    assert {f[14 + 6] for f in replies} == {44}
    idents = {f[58:62] for f in replies}
    assert len(idents) == 1
    offsets = [struct.unpack("!H", f[56:58])[0] for f in replies]
    assert [o & 1 for o in offsets] == [1, 1, 0]
    body = b"".join(f[62:] for f in sorted(replies, key=lambda f: f[56:58]))
    assert body == icmp6(OWN, PEER, 129, 0, b"\x00\x09\x00\x01" + data)
    assert lab.stack.counters["tx6_fragmented"] == 1


def test_ipv6_refused_on_a_link_under_1280_bytes():
    net = SimNetwork(seed=1)
    stack = net.add_host("s")
    net.add_probe(stack, "198.18.0.2/24", mtu=1279)
    with pytest.raises(ValueError):
        stack.ip6.enable(stack.interfaces[0], net.now)
    assert not stack.interfaces[0].ipv6
