"""Arbitrary and mutated bytes fed to every parser: a result or a WireError, nothing else."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import (
    addrs,
    arp_packets,
    eth_headers,
    icmp_messages,
    ipv4_headers,
    payloads,
    tcp_headers,
    u16,
    vnet_headers,
)

from stack.wire import WireError, arp, ethernet, icmp, ipv4, tcp, udp, vnet

_SRC = bytes((198, 18, 0, 1))
_DST = bytes((198, 19, 0, 1))


def _strip(buf: bytes) -> object:
    return ipv4.strip_options(bytearray(buf), 0)


def _option_offsets(buf: bytes) -> object:
    return tcp.option_offsets(buf, (buf[12] >> 4) * 4 if len(buf) > 12 else 20)


PARSERS: dict[str, Callable[[bytes], object]] = {
    "ethernet": ethernet.EthernetHeader.parse,
    "arp": arp.ArpPacket.parse,
    "vnet": vnet.VirtioNetHdr.parse,
    "ipv4": ipv4.Ipv4Header.parse,
    "ipv4_nocsum": lambda b: ipv4.Ipv4Header.parse(b, verify_checksum=False),
    "ipv4_options": ipv4.parse_options,
    "ipv4_strip": _strip,
    "icmp": icmp.IcmpMessage.parse,
    "icmp_nocsum": lambda b: icmp.IcmpMessage.parse(b, verify_checksum=False),
    "icmp_error_payload": icmp.error_payload,
    "udp": udp.UdpHeader.parse,
    "udp_verify": lambda b: udp.verify(_SRC, _DST, b),
    "tcp": tcp.TcpHeader.parse,
    "tcp_options": tcp.parse_options,
    "tcp_option_offsets": _option_offsets,
    "tcp_checksum": lambda b: tcp.tcp_checksum(_SRC, _DST, b),
    "tcp_verify": lambda b: tcp.verify_tcp_checksum(_SRC, _DST, b),
}


def feed_all(data: bytes) -> None:
    """Every parser, with bytes, bytearray and memoryview input."""
    for parse in PARSERS.values():
        for buf in (data, bytearray(data), memoryview(data)):
            try:
                parse(buf)
            except WireError as e:
                assert e.reason and e.reason == e.reason.lower() and " " not in e.reason


@settings(deadline=None)  # heavy example; no flaky deadline on a loaded machine
@given(st.binary(max_size=120))
def test_arbitrary_bytes(data: bytes) -> None:
    feed_all(data)


def _ip_datagram(h: ipv4.Ipv4Header, payload: bytes) -> bytes:
    return h.to_bytes(len(payload)) + payload


@st.composite
def valid_packets(draw: st.DrawFn) -> bytes:
    """A valid encoding of some header, to be mutated."""
    kind = draw(st.sampled_from(["eth", "arp", "vnet", "ip", "icmp", "udp", "tcp"]))
    if kind == "eth":
        return draw(eth_headers).to_bytes()
    if kind == "arp":
        return draw(arp_packets).to_bytes()
    if kind == "vnet":
        return draw(vnet_headers).to_bytes()
    if kind == "ip":
        return _ip_datagram(draw(ipv4_headers), draw(payloads))
    if kind == "icmp":
        return draw(icmp_messages).to_bytes()
    if kind == "udp":
        return udp.build_datagram(_SRC, _DST, draw(u16), draw(u16), draw(payloads))
    return tcp.build_segment(_SRC, _DST, draw(tcp_headers()), draw(payloads))


@settings(deadline=None)  # heavy example; no flaky deadline on a loaded machine
@given(valid_packets(), st.data())
def test_mutated_packets(packet: bytes, data: st.DataObject) -> None:
    buf = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    feed_all(bytes(buf))
    feed_all(bytes(buf[:cut]))


@settings(deadline=None)  # heavy example; no flaky deadline on a loaded machine
@given(tcp_headers(), st.data())
def test_mutated_tcp_options(h: tcp.TcpHeader, data: st.DataObject) -> None:
    # Concentrate mutations on the option area, where the walking logic lives.
    buf = bytearray(h.to_bytes())
    if len(buf) > 20:
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(20, len(buf) - 1))
            buf[pos] = data.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 40, 255]))
    feed_all(bytes(buf))


@given(addrs, addrs, tcp_headers(), payloads)
def test_checksums_detect_single_byte_corruption(src, dst, h, payload) -> None:
    seg = bytearray(tcp.build_segment(src, dst, h, payload))
    assert tcp.verify_tcp_checksum(src, dst, seg)
    seg[len(seg) // 2] ^= 0x5A
    assert not tcp.verify_tcp_checksum(src, dst, seg)
