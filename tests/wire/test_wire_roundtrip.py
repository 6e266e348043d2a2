"""parse(emit(x)) == x for every codec, over hypothesis-built valid values."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import (
    addrs,
    arp_packets,
    eth_headers,
    icmp_messages,
    ipv4_headers,
    payloads,
    tcp_headers,
    tcp_options,
    u16,
    vnet_headers,
)

from stack.wire import WireError, arp, ethernet, icmp, ipv4, tcp, udp, vnet


@given(eth_headers)
def test_ethernet(h: ethernet.EthernetHeader) -> None:
    raw = h.to_bytes()
    assert len(raw) == ethernet.ETH_HLEN
    assert ethernet.EthernetHeader.parse(raw + b"payload") == h
    buf = bytearray(20)
    h.emit_into(buf, 3)
    assert ethernet.EthernetHeader.parse(memoryview(buf)[3:]) == h


@given(arp_packets)
def test_arp(p: arp.ArpPacket) -> None:
    raw = p.to_bytes()
    assert len(raw) == arp.ARP_LEN
    assert arp.ArpPacket.parse(raw + bytes(18)) == p  # Ethernet minimum-frame padding


@given(vnet_headers)
def test_vnet(h: vnet.VirtioNetHdr) -> None:
    raw = h.to_bytes()
    assert raw == vnet.VNET.pack(h.flags, h.gso_type, h.hdr_len, h.gso_size, h.csum_start,
                                 h.csum_offset)
    assert vnet.VirtioNetHdr.parse(bytearray(raw)) == h


@given(ipv4_headers, st.integers(0, 2000))
def test_ipv4(h: ipv4.Ipv4Header, payload_len: int) -> None:
    raw = h.to_bytes(payload_len)
    assert len(raw) == h.header_len
    datagram = raw + bytes(payload_len)
    got = ipv4.Ipv4Header.parse(datagram)  # verifies the checksum
    want = dataclasses.replace(h, total_length=h.header_len + payload_len, checksum=got.checksum)
    assert got == want
    assert got.is_fragment == (h.mf or h.frag_offset != 0)


@given(icmp_messages)
def test_icmp(m: icmp.IcmpMessage) -> None:
    got = icmp.IcmpMessage.parse(m.to_bytes())
    assert got == m
    assert (got.echo_id << 16 | got.echo_seq) == m.rest


@given(addrs, addrs, u16, u16, payloads)
def test_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> None:
    d = udp.build_datagram(src, dst, sport, dport, payload)
    h = udp.UdpHeader.parse(d)
    assert (h.sport, h.dport, h.length) == (sport, dport, len(payload) + 8)
    assert h.checksum != 0
    assert udp.verify(src, dst, d)
    assert udp.UdpHeader.parse(h.to_bytes() + payload) == h


@given(tcp_options())
def test_tcp_options(o: tcp.TcpOptions) -> None:
    raw = tcp.emit_options(o)
    assert len(raw) % 4 == 0 and len(raw) <= tcp.TCP_MAX_OPTLEN
    assert tcp.parse_options(raw) == o


@given(tcp_headers(), payloads, addrs, addrs)
def test_tcp(h: tcp.TcpHeader, payload: bytes, src: bytes, dst: bytes) -> None:
    raw = h.to_bytes()
    assert len(raw) == h.header_len
    assert tcp.TcpHeader.parse(raw + payload) == h
    seg = tcp.build_segment(src, dst, h, payload)
    got = tcp.TcpHeader.parse(seg)
    assert got == dataclasses.replace(h, checksum=tcp.tcp_checksum(src, dst, seg))
    assert tcp.verify_tcp_checksum(src, dst, seg)


@given(tcp_headers())
def test_tcp_header_len_compute(h: tcp.TcpHeader) -> None:
    # header_len 0 means "compute"; a larger header_len pads with EOL and still parses
    computed = dataclasses.replace(h, header_len=0).to_bytes()
    assert computed == h.to_bytes()
    if h.header_len <= 56:
        padded = dataclasses.replace(h, header_len=h.header_len + 4).to_bytes()
        assert tcp.TcpHeader.parse(padded).options == h.options


def test_tcp_syn_layout_is_linux_like() -> None:
    o = tcp.TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0))
    assert tcp.emit_options(o) == bytes.fromhex("020405b4" "0402080a" "00000001" "00000000"
                                                "01030307")
    o = tcp.TcpOptions(timestamp=(1, 2), sack_blocks=((10, 20),))
    assert tcp.emit_options(o) == bytes.fromhex("0101080a" "00000001" "00000002"
                                                "0101050a" "0000000a" "00000014")
    assert tcp.emit_options(tcp.TcpOptions(sack_permitted=True)) == bytes.fromhex("01010402")


def test_tcp_options_too_long() -> None:
    o = tcp.TcpOptions(mss=1460, timestamp=(1, 2), sack_blocks=((1, 2),) * 3)
    with pytest.raises(ValueError):
        tcp.emit_options(o)
    with pytest.raises(WireError):
        tcp.emit_options(tcp.TcpOptions(mss=70_000))
    with pytest.raises(WireError):
        tcp.emit_options(tcp.TcpOptions(unknown=((tcp.OPT_MSS, b"\0\0"),)))


def test_emit_rejects_bad_fields() -> None:
    with pytest.raises(WireError):
        ethernet.EthernetHeader(b"\0" * 5, b"\0" * 6, 0).to_bytes()
    with pytest.raises(WireError):
        ipv4.Ipv4Header(b"\0" * 4, b"\0" * 4, 6, frag_offset=3).to_bytes(0)
    with pytest.raises(WireError):
        ipv4.Ipv4Header(b"\0" * 4, b"\0" * 4, 6, options=bytes(44)).to_bytes(0)
    with pytest.raises(WireError):
        ipv4.Ipv4Header(b"\0" * 4, b"\0" * 4, 6).emit_into(bytearray(30), 12, 0)
    with pytest.raises(WireError):
        tcp.TcpHeader(1, 2, 3, 4, 0, 5, header_len=18).to_bytes()
    with pytest.raises(WireError):
        udp.build_datagram(b"\0" * 4, b"\0" * 4, 1, 2, bytes(0x10000))
