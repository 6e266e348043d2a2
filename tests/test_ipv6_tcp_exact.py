"""TCP over IPv6 against hand-made frames on the simulated link: the handshake with
options, data and FIN, RSTs, SYN cookies and path MTU discovery from Packet Too Big
(RFC 8201), each compared whole (Ethernet, IPv6 with its flow label, TCP)."""

from __future__ import annotations

import struct

from stack.tcp.api import TcpConfig
from stack.tcp.layer import ANY6, TcpLayer
from stack.wire.checksum import pseudo_header_sum6
from stack.wire.ipv6 import ip6_bytes
from stack.wire.ipv6ext import options_header
from stack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions, build_segment
from stack.wire.vnet import VIRTIO_NET_HDR_GSO_TCPV6
from tests.test_core_ipv6 import OWN, PEER, PEER_MAC, Lab6, eth, icmp6

ROUTER = ip6_bytes("2001:2:0:9::1")


def ip6(src: bytes, dst: bytes, payload: bytes, label: int = 0, hlim: int = 64,
        nxt: int = 6) -> bytes:
    return struct.pack("!IHBB", 6 << 28 | label, len(payload), nxt, hlim) + src + dst + payload


class Tcp6(Lab6):
    """Lab6 with TCP registered; DAD done and the peer in the neighbour cache."""

    def __init__(self, config: TcpConfig | None = None) -> None:
        super().__init__()
        self.tcp = TcpLayer(self.stack, config=config, rng=self.stack.rng)
        self.stack.register_protocol(6, self.tcp)
        self.settle()
        self.learn_peer()

    def send_seg(self, hdr: TcpHeader, payload: bytes = b"") -> float:
        """Send a segment from the peer; returns the time it arrived."""
        t = self.net.now
        self.send(eth(self.mac, PEER_MAC, ip6(PEER, OWN, build_segment(PEER, OWN, hdr,
                                                                         payload))))
        return t

    def frame(self, hdr: TcpHeader, payload: bytes = b"") -> bytes:
        """What the stack should send: its flow label is RFC 6437's hash."""
        label = self.stack.ip6.flow_label(OWN, PEER, 6, struct.pack("!HH", hdr.sport,
                                                                     hdr.dport))
        return eth(PEER_MAC, self.mac, ip6(OWN, PEER, build_segment(OWN, PEER, hdr, payload),
                                           label))


SYN_OPTS = TcpOptions(mss=1440, wscale=7, sack_permitted=True, timestamp=(1000, 0))


def _handshake(lab: Tcp6, sport: int = 40000):
    lst = lab.tcp.listen(ANY6, 80)
    t = lab.send_seg(TcpHeader(sport, 80, 100, 0, SYN, 65535, options=SYN_OPTS))
    (synack,) = lab.probe.take()
    tcb = lab.tcp.connections[(OWN, 80, PEER, sport)]
    want = lab.frame(TcpHeader(80, sport, tcb.iss, 101, SYN | ACK, 65535, options=TcpOptions(
        mss=1500 - 60, wscale=tcb.rcv_wscale, sack_permitted=True,
        timestamp=((int(t * 1000) + tcb.ts_offset) & 0xFFFFFFFF, 1000))))
    assert synack == want
    return lst, tcb


def test_handshake_with_options_data_and_fin():
    lab = Tcp6()
    lst, tcb = _handshake(lab)
    ts = (int(lab.net.now * 1000) + tcb.ts_offset) & 0xFFFFFFFF
    lab.send_seg(TcpHeader(40000, 80, 101, tcb.iss + 1, ACK, 512,
                           options=TcpOptions(timestamp=(1001, ts))))
    assert lab.probe.take() == []
    assert lst.accept() is tcb and tcb.mss == 1440 - 12
    t = lab.send_seg(TcpHeader(40000, 80, 101, tcb.iss + 1, ACK | PSH | FIN, 512,
                               options=TcpOptions(timestamp=(1002, ts))), b"hello")
    (ack,) = lab.probe.take()
    window = (tcb.rcv_adv - tcb.rcv_nxt) >> tcb.rcv_wscale
    assert ack == lab.frame(TcpHeader(80, 40000, tcb.iss + 1, 107, ACK, window, options=
                                      TcpOptions(timestamp=((int(t * 1000) + tcb.ts_offset)
                                                            & 0xFFFFFFFF, 1002))))
    assert tcb.recv(100) == b"hello" and tcb.state.value == "CLOSE-WAIT"


def test_segment_for_no_connection_gets_a_rst():
    lab = Tcp6()
    lab.send_seg(TcpHeader(40001, 81, 500, 0, SYN, 65535))
    (rst,) = lab.probe.take()
    assert rst == lab.frame(TcpHeader(81, 40001, 0, 501, RST | ACK, 0))
    lab.send_seg(TcpHeader(40001, 81, 501, 7777, ACK, 65535))
    (rst,) = lab.probe.take()
    assert rst == lab.frame(TcpHeader(81, 40001, 7777, 0, RST, 0))


def test_flow_labels_are_per_flow():
    lab = Tcp6()
    f = lab.stack.ip6.flow_label
    a = f(OWN, PEER, 6, struct.pack("!HH", 80, 40000))
    assert a == f(OWN, PEER, 6, struct.pack("!HH", 80, 40000)) and 0 < a < 1 << 20
    assert a != f(OWN, PEER, 6, struct.pack("!HH", 80, 40001))


def test_syn_cookie_handshake_over_ipv6():
    lab = Tcp6(TcpConfig(syn_backlog=1))
    lab.tcp.listen(ANY6, 80)
    lab.send_seg(TcpHeader(40000, 80, 100, 0, SYN, 65535, options=TcpOptions(mss=1440)))
    assert len(lab.probe.take()) == 1                 # the SYN queue is full now
    t = lab.send_seg(TcpHeader(40002, 80, 300, 0, SYN, 65535, options=TcpOptions(mss=1440)))
    (synack,) = lab.probe.take()
    cookie, mss = lab.tcp.cookies.make(OWN, 80, PEER, 40002, 300, 1440, t)
    assert synack == lab.frame(TcpHeader(80, 40002, cookie, 301, SYN | ACK,
                                         min(lab.tcp.config.rcvbuf_initial, 0xFFFF),
                                         options=TcpOptions(mss=1440)))
    assert (OWN, 80, PEER, 40002) not in lab.tcp.connections
    lab.send_seg(TcpHeader(40002, 80, 301, cookie + 1, ACK, 512))
    tcb = lab.tcp.connections[(OWN, 80, PEER, 40002)]
    assert lab.tcp.counters["syncookies_ok"] == 1 and mss == 1440
    assert tcb.state.value == "ESTABLISHED" and tcb.mss == 1440


def _ptb(lab: Tcp6, mtu: int, quoted: bytes) -> None:
    msg = icmp6(ROUTER, OWN, 2, 0, struct.pack("!I", mtu) + quoted[14:14 + 1232])
    lab.send(eth(lab.mac, PEER_MAC, ip6(ROUTER, OWN, msg, nxt=58)))


def test_packet_too_big_lowers_the_mss_and_resends():
    lab = Tcp6(TcpConfig(tlp=False))      # no loss probe among the segments
    _, tcb = _handshake(lab)
    ts = (int(lab.net.now * 1000) + tcb.ts_offset) & 0xFFFFFFFF
    lab.send_seg(TcpHeader(40000, 80, 101, tcb.iss + 1, ACK, 4096,
                           options=TcpOptions(timestamp=(1001, ts))))
    tcb.nodelay = True
    tcb.send(bytes(range(256)) * 8, lab.net.now)
    lab.net.flush()
    lab.run()
    sent = lab.probe.take()
    assert [len(f) - 14 - 40 - 32 for f in sent] == [1428, 620]
    _ptb(lab, 1000, sent[0])            # under IPv6's minimum: discarded (RFC 8201 §4)
    assert lab.stack.counters["icmp6_ptb_below_minimum"] == 1 and tcb.mss == 1428
    assert lab.probe.take() == []
    _ptb(lab, 1280, sent[0])
    assert tcb.mss == 1280 - 60 - 12 and tcb.pmtu == 1280
    # The first segment no longer fits: resent in two (the second one still does).
    again = lab.probe.take()
    assert [f[14 + 40 + 32:] for f in again] == [(bytes(range(256)) * 8)[:1208],
                                                 (bytes(range(256)) * 8)[1208:1428]]
    assert again[0][14 + 40 + 4:14 + 40 + 8] == sent[0][14 + 40 + 4:14 + 40 + 8]  # same seq
    assert all(len(f) - 14 <= 1280 for f in again)


def test_tso6_super_segment_with_a_partial_checksum():
    lab = Tcp6(TcpConfig(tlp=False))
    lab.iface.offload = True             # the device takes TSO6 and finishes checksums
    lab.net.links[-1].offload = True
    lst = lab.tcp.listen(ANY6, 80)
    lab.send_seg(TcpHeader(40000, 80, 100, 0, SYN, 65535, options=TcpOptions(mss=1440)))
    lab.probe.take()
    tcb = lab.tcp.connections[(OWN, 80, PEER, 40000)]
    lab.send_seg(TcpHeader(40000, 80, 101, tcb.iss + 1, ACK, 65535))
    assert lst.accept() is tcb and tcb.offload
    data = bytes(range(240)) * 18          # three segments: the initial window
    tcb.nodelay = True
    tcb.send(data, lab.net.now)
    lab.net.flush()
    lab.run()
    (skb,) = lab.probe.take_skbs()
    assert (skb.gso_type, skb.gso_size, skb.hdr_len) == (VIRTIO_NET_HDR_GSO_TCPV6, 1440, 74)
    assert (skb.vnet_flags, skb.csum_start, skb.csum_offset) == (1, 54, 16)
    hdr = TcpHeader(80, 40000, tcb.iss + 1, 101, ACK | PSH,
                    (tcb.rcv_adv - tcb.rcv_nxt) >> tcb.rcv_wscale)
    seg = bytearray(hdr.to_bytes() + data)
    seg[16:18] = struct.pack("!H", pseudo_header_sum6(OWN, PEER, 6, len(seg)))
    label = lab.stack.ip6.flow_label(OWN, PEER, 6, struct.pack("!HH", 80, 40000))
    assert skb.tobytes() == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, bytes(seg), label))


def _unreach(lab: Tcp6, type_: int, code: int, quoted: bytes) -> None:
    msg = icmp6(PEER, OWN, type_, code, bytes(4) + quoted[14:])
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, msg, nxt=58)))


def test_icmpv6_errors_reach_the_connection():
    lab = Tcp6()
    tcb = lab.tcp.connect(PEER, 80, lab.net.now)
    lab.net.flush()
    lab.run()
    (syn,) = lab.probe.take()
    assert syn[14 + 8:14 + 24] == OWN and tcb.local == OWN      # source selection
    _unreach(lab, 3, 0, syn)                                   # hop limit exceeded: soft
    assert tcb.state.value == "SYN-SENT" and tcb.soft_error is not None
    _unreach(lab, 1, 4, syn)                                   # port unreachable: hard
    assert tcb.state.value == "CLOSED" and isinstance(tcb.error, ConnectionRefusedError)
    assert lab.tcp.counters["icmp_hard_error"] == 1 and lab.tcp.counters["icmp_soft_error"] == 1


def test_a_syn_behind_a_destination_options_header_is_answered():
    lab = Tcp6()
    lab.tcp.listen(ANY6, 80)
    syn = build_segment(PEER, OWN, TcpHeader(40003, 80, 900, 0, SYN, 65535,
                                             options=TcpOptions(mss=1440)))
    lab.send(eth(lab.mac, PEER_MAC, ip6(PEER, OWN, options_header(6) + syn, nxt=60)))
    (synack,) = lab.probe.take()
    tcb = lab.tcp.connections[(OWN, 80, PEER, 40003)]
    assert synack == lab.frame(TcpHeader(80, 40003, tcb.iss, 901, SYN | ACK, 65535,
                                         options=TcpOptions(mss=1440)))


def test_an_ipv4_wildcard_listener_does_not_hear_ipv6():
    lab = Tcp6()
    lab.tcp.listen(b"\0\0\0\0", 80)          # 0.0.0.0: IPv4 only, as :: is IPv6 only
    lab.send_seg(TcpHeader(40004, 80, 500, 0, SYN, 65535))
    (rst,) = lab.probe.take()
    assert rst == lab.frame(TcpHeader(80, 40004, 0, 501, RST | ACK, 0))


def test_the_control_snapshot_shows_ipv6_listeners_and_connections():
    from stack.control import _listeners, connection_row

    lab = Tcp6()
    _, tcb = _handshake(lab)
    row = connection_row(tcb)
    assert (row["local"], row["remote"]) == ("2001:2:0:1::2", "2001:2:0:1::1")
    assert [(r["local"], r["local_port"]) for r in _listeners(lab.tcp)] == [("::", 80)]


def test_time_wait_record_over_ipv6_acks_a_retransmitted_fin():
    from stack.tcp.timewait import TimeWait

    lab = Tcp6(TcpConfig(timestamps=False, tlp=False))
    lst = lab.tcp.listen(ANY6, 80)
    lab.send_seg(TcpHeader(40005, 80, 100, 0, SYN, 65535, options=TcpOptions(mss=1440)))
    lab.probe.take()
    tcb = lab.tcp.connections[(OWN, 80, PEER, 40005)]
    lab.send_seg(TcpHeader(40005, 80, 101, tcb.iss + 1, ACK, 65535))
    assert lst.accept() is tcb
    tcb.close(lab.net.now)
    lab.net.flush()
    lab.run()
    (fin,) = lab.probe.take()
    window = (tcb.rcv_adv - tcb.rcv_nxt) >> tcb.rcv_wscale
    assert fin == lab.frame(TcpHeader(80, 40005, tcb.iss + 1, 101, ACK | PSH | FIN, window))
    lab.send_seg(TcpHeader(40005, 80, 101, tcb.iss + 2, ACK | FIN, 65535))
    (ack,) = lab.probe.take()
    window = (tcb.rcv_adv - tcb.rcv_nxt) >> tcb.rcv_wscale     # the FIN took one
    assert ack == lab.frame(TcpHeader(80, 40005, tcb.iss + 2, 102, ACK, window))
    record = lab.tcp.connections[(OWN, 80, PEER, 40005)]
    assert type(record) is TimeWait
    lab.send_seg(TcpHeader(40005, 80, 101, tcb.iss + 2, ACK | FIN, 65535))  # again
    (again,) = lab.probe.take()
    assert again == ack


def test_slaac_and_the_default_router_from_an_ra_carry_a_syn_off_link():
    from stack.addrconf import AddrState
    from tests.test_core_ipv6 import ALL_NODES, mmac

    lab = Lab6(add=False)
    tcp = TcpLayer(lab.stack, rng=lab.stack.rng)
    lab.stack.register_protocol(6, tcp)
    lab.stack.ip6.enable(lab.iface, lab.net.now, auto=True)
    lab.settle()
    router = ip6_bytes("fe80::1")
    prefix = ip6_bytes("2001:2:0:1::")
    pi = struct.pack("!BBBBII4x", 3, 4, 64, 0xC0, 86400, 14400) + prefix
    ra = icmp6(router, ALL_NODES, 134, 0, struct.pack("!BBH", 64, 0, 1800) + bytes(8)
               + b"\x01\x01" + PEER_MAC + pi)
    lab.send(eth(mmac(ALL_NODES), PEER_MAC, ip6(router, ALL_NODES, ra, hlim=255, nxt=58)))
    lab.settle()
    (slaac,) = [a for a in lab.stack.ip6.addresses.for_iface(lab.iface)
                if a.addr[:8] == prefix[:8]]
    assert slaac.state is AddrState.PREFERRED
    far = ip6_bytes("2001:2:0:9::1")
    tcb = tcp.connect(far, 443, lab.net.now)
    lab.net.flush()
    lab.run()
    (syn,) = lab.probe.take()
    assert tcb.local == slaac.addr                      # RFC 6724: the global one
    assert syn[:6] == PEER_MAC                          # to the router's MAC
    assert syn[14 + 8:14 + 24] == slaac.addr and syn[14 + 24:14 + 40] == far
