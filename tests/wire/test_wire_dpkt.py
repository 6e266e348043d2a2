"""Golden bytes cross-checked against dpkt in both directions, checksums included."""

from __future__ import annotations

import struct

import dpkt
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import (
    addrs,
    arp_packets,
    icmp_messages,
    ipv4_headers,
    ipv4_options,
    macs,
    payloads,
    tcp_headers,
    u8,
    u16,
    u32,
)

from stack.wire import arp, ethernet, icmp, ipv4, tcp, udp

# EtherTypes that dpkt decodes specially (VLAN, MPLS, PPPoE, ...) would change the
# header it reports; values below 0x0600 are 802.3 lengths, not types.
_PLAIN_TYPES = st.sampled_from([ethernet.ETH_P_IP, ethernet.ETH_P_ARP, ethernet.ETH_P_IPV6,
                                0x88B5, 0x88B6, 0x9000, 0x0900, 0xFFFF])
_EXP_PROTO = 253  # RFC 3692 experimental: dpkt leaves the payload undecoded


@given(macs, macs, _PLAIN_TYPES)
def test_ethernet(dst: bytes, src: bytes, etype: int) -> None:
    raw = bytes(dpkt.ethernet.Ethernet(dst=dst, src=src, type=etype, data=b""))
    assert ethernet.EthernetHeader.parse(raw) == ethernet.EthernetHeader(dst, src, etype)
    d = dpkt.ethernet.Ethernet(ethernet.EthernetHeader(dst, src, etype).to_bytes())
    assert (d.dst, d.src, d.type) == (dst, src, etype)


@given(arp_packets)
def test_arp(p: arp.ArpPacket) -> None:
    raw = bytes(dpkt.arp.ARP(op=p.op, sha=p.sha, spa=p.spa, tha=p.tha, tpa=p.tpa))
    assert arp.ArpPacket.parse(raw) == p
    d = dpkt.arp.ARP(p.to_bytes())
    assert (d.hrd, d.pro, d.hln, d.pln) == (1, 0x0800, 6, 4)
    assert (d.op, d.sha, d.spa, d.tha, d.tpa) == (p.op, p.sha, p.spa, p.tha, p.tpa)


@given(addrs, addrs, u8, u8, u16, st.booleans(), st.booleans(), st.integers(0, 0x1FFF),
       ipv4_options(), payloads)
def test_ipv4_from_dpkt(src, dst, ttl, tos, ident, df, mf, frag8, opts, payload) -> None:
    ip = dpkt.ip.IP(src=src, dst=dst, p=_EXP_PROTO, ttl=ttl, tos=tos, id=ident, df=df, mf=mf,
                    offset=frag8, opts=opts, hl=5 + len(opts) // 4, data=payload)
    raw = bytes(ip)
    h = ipv4.Ipv4Header.parse(raw)
    assert (h.src, h.dst, h.proto, h.ttl, h.tos, h.ident) == (src, dst, _EXP_PROTO, ttl, tos,
                                                               ident)
    assert (h.df, h.mf, h.frag_offset) == (df, mf, frag8 * 8)
    assert (h.total_length, h.checksum, h.options) == (ip.len, ip.sum, opts)
    assert raw[h.header_len:h.total_length] == payload


@given(ipv4_headers, payloads)
def test_ipv4_to_dpkt(h: ipv4.Ipv4Header, payload: bytes) -> None:
    raw = h.to_bytes(len(payload)) + payload
    d = dpkt.ip.IP(raw)
    assert (d.src, d.dst, d.p, d.ttl, d.tos, d.id) == (
        h.src, h.dst, h.proto, h.ttl, h.tos, h.ident)
    assert (bool(d.df), bool(d.mf), d.offset * 8) == (h.df, h.mf, h.frag_offset)
    assert (d.hl * 4, d.len, d.opts) == (h.header_len, len(raw), h.options)
    ours = d.sum
    d.sum = 0  # let dpkt compute the header checksum itself
    d.data = payload
    bytes(d)
    assert d.sum == ours


@given(u8, u8, u32, payloads)
def test_icmp(typ: int, code: int, rest: int, payload: bytes) -> None:
    body = struct.pack("!I", rest) + payload
    raw = bytes(dpkt.icmp.ICMP(type=typ, code=code, data=body))
    m = icmp.IcmpMessage.parse(raw)
    assert (m.type, m.code, m.rest, bytes(m.payload)) == (typ, code, rest, payload)
    assert icmp.IcmpMessage(typ, code, rest, payload).to_bytes() == raw


@given(icmp_messages)
def test_icmp_checksum_to_dpkt(m: icmp.IcmpMessage) -> None:
    raw = m.to_bytes()
    ours = struct.unpack_from("!H", raw, 2)[0]
    recomputed = bytes(dpkt.icmp.ICMP(type=m.type, code=m.code, data=raw[4:]))
    assert struct.unpack_from("!H", recomputed, 2)[0] == ours


def _in_ip(src: bytes, dst: bytes, proto: int, l4: dpkt.Packet) -> bytes:
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, data=l4)
    raw = bytes(ip)  # dpkt fills the transport checksum using the pseudo-header
    return raw[ip.hl * 4:]


@given(addrs, addrs, u16, u16, payloads)
def test_udp(src, dst, sport, dport, payload) -> None:
    d = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    raw = _in_ip(src, dst, 17, d)
    assert udp.build_datagram(src, dst, sport, dport, payload) == raw
    h = udp.UdpHeader.parse(raw)
    assert (h.sport, h.dport, h.length, h.checksum) == (sport, dport, d.ulen, d.sum)
    assert udp.verify(src, dst, raw)


def _dpkt_opts(o: tcp.TcpOptions) -> list[tuple[int, bytes]]:
    raw = tcp.emit_options(o)
    return [x for x in dpkt.tcp.parse_opts(raw) if x[0] != tcp.OPT_NOP]


def _expected_opts(o: tcp.TcpOptions) -> set[tuple[int, bytes]]:
    want = set()
    if o.mss is not None:
        want.add((tcp.OPT_MSS, struct.pack("!H", o.mss)))
    if o.wscale is not None:
        want.add((tcp.OPT_WSCALE, bytes((o.wscale,))))
    if o.sack_permitted:
        want.add((tcp.OPT_SACK_PERM, b""))
    if o.timestamp is not None:
        want.add((tcp.OPT_TIMESTAMP, struct.pack("!II", *o.timestamp)))
    if o.sack_blocks:
        want.add((tcp.OPT_SACK, b"".join(struct.pack("!II", *b) for b in o.sack_blocks)))
    return want | set(o.unknown)


@given(tcp_headers(), payloads, addrs, addrs)
def test_tcp_to_dpkt(h: tcp.TcpHeader, payload: bytes, src: bytes, dst: bytes) -> None:
    seg = tcp.build_segment(src, dst, h, payload)
    d = dpkt.tcp.TCP(seg)
    assert (d.sport, d.dport, d.seq, d.ack, d.flags, d.win, d.urp) == (
        h.sport, h.dport, h.seq, h.ack, h.flags, h.window, h.urgent)
    assert d.off * 4 == h.header_len and d.data == payload
    assert set(_dpkt_opts(h.options)) == _expected_opts(h.options)
    ours = d.sum
    d.sum = 0
    assert struct.unpack_from("!H", _in_ip(src, dst, 6, d), 16)[0] == ours


@given(tcp_headers(), payloads, addrs, addrs)
def test_tcp_from_dpkt(h: tcp.TcpHeader, payload: bytes, src: bytes, dst: bytes) -> None:
    opts = tcp.emit_options(h.options)
    d = dpkt.tcp.TCP(sport=h.sport, dport=h.dport, seq=h.seq, ack=h.ack, flags=h.flags,
                     win=h.window, urp=h.urgent, off=5 + len(opts) // 4, opts=opts,
                     data=payload)
    raw = _in_ip(src, dst, 6, d)
    got = tcp.TcpHeader.parse(raw)
    assert got.checksum == d.sum == tcp.tcp_checksum(src, dst, raw)
    assert tcp.verify_tcp_checksum(src, dst, raw)
    assert (got.sport, got.dport, got.seq, got.ack, got.flags, got.window, got.urgent) == (
        h.sport, h.dport, h.seq, h.ack, h.flags, h.window, h.urgent)
    assert got.options == h.options and got.header_len == h.header_len
