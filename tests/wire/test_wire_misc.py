"""Ethernet, ARP, ICMP, UDP and virtio_net_hdr specifics."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import addrs, ipv4_headers, payloads

from stack.wire import WireError, arp, ethernet, icmp, tcp, udp, vnet
from stack.wire.checksum import ones_sum, pseudo_header_sum


def _reason(fn, *args) -> str:
    with pytest.raises(WireError) as e:
        fn(*args)
    return e.value.reason


def test_error_type() -> None:
    e = WireError("tcp_bad_option", "kind 2 length 3")
    assert isinstance(e, ValueError) and e.reason == "tcp_bad_option"
    assert "kind 2" in str(e) and str(WireError("x")) == "x"
    back = pickle.loads(pickle.dumps(e))
    assert (back.reason, back.detail, str(back)) == (e.reason, e.detail, str(e))


def test_mac_helpers() -> None:
    mac = ethernet.parse_mac("02:00:5E:00:00:0a")
    assert mac == b"\x02\x00\x5e\x00\x00\x0a"
    assert ethernet.mac_str(mac) == "02:00:5e:00:00:0a"
    for bad in ("02:00:5e:00:00", "02:00:5e:00:00:0g", "0200.5e00.000a", "2:0:5e:0:0:a:"):
        with pytest.raises(ValueError):
            ethernet.parse_mac(bad)
    assert ethernet.is_multicast(ethernet.BROADCAST)
    assert ethernet.is_multicast(b"\x01\x00\x5e\x00\x00\x01")
    assert not ethernet.is_multicast(mac)


@given(st.integers(0, 2**32))
def test_random_mac_is_local_unicast(seed: int) -> None:
    mac = ethernet.random_mac(random.Random(seed))
    assert len(mac) == 6 and mac[0] & 0x02 and not ethernet.is_multicast(mac)
    assert ethernet.random_mac(random.Random(seed)) == mac  # deterministic per rng


def test_ethernet_and_vnet_truncated() -> None:
    assert _reason(ethernet.EthernetHeader.parse, bytes(13)) == "eth_truncated"
    assert _reason(vnet.VirtioNetHdr.parse, bytes(9)) == "vnet_truncated"


def test_vnet_layout_is_little_endian() -> None:
    h = vnet.VirtioNetHdr(vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 34, 16)
    assert h.to_bytes() == bytes.fromhex("0101" "4200" "a805" "2200" "1000")
    assert vnet.VNET.size == vnet.VNET_HDR_LEN


def _arp_bytes(**kw: int) -> bytearray:
    p = arp.ArpPacket(arp.ARP_REQUEST, b"\x02" * 6, b"\xc6\x12\0\1", bytes(6), b"\xc6\x12\0\2")
    buf = bytearray(p.to_bytes())
    pos = {"htype": (0, 2), "ptype": (2, 2), "hlen": (4, 1), "plen": (5, 1), "op": (6, 2)}
    for name, value in kw.items():
        off, size = pos[name]
        buf[off:off + size] = value.to_bytes(size, "big")
    return buf


def test_arp_reasons() -> None:
    assert _reason(arp.ArpPacket.parse, _arp_bytes()[:27]) == "arp_truncated"
    for field, value in (("htype", 6), ("ptype", 0x86DD), ("hlen", 8), ("plen", 16)):
        assert _reason(arp.ArpPacket.parse, _arp_bytes(**{field: value})) == "arp_unsupported"
    for op in (0, 3, 0xFFFF):
        assert _reason(arp.ArpPacket.parse, _arp_bytes(op=op)) == "arp_bad_op"


def test_icmp() -> None:
    m = icmp.IcmpMessage(icmp.ECHO_REQUEST, 0, 0x1234 << 16 | 7, b"ping")
    raw = bytearray(m.to_bytes())
    got = icmp.IcmpMessage.parse(raw)
    assert (got.echo_id, got.echo_seq, got.is_error) == (0x1234, 7, False)
    raw[-1] ^= 0xFF
    assert _reason(icmp.IcmpMessage.parse, raw) == "icmp_bad_checksum"
    assert icmp.IcmpMessage.parse(raw, verify_checksum=False).payload == b"pin\x98"
    assert _reason(icmp.IcmpMessage.parse, raw[:7]) == "icmp_truncated"
    assert [icmp.IcmpMessage(t, 0).is_error for t in (0, 3, 4, 5, 8, 11, 12)] == [
        False, True, True, True, False, True, True]


def test_icmp_payload_is_not_copied() -> None:
    raw = bytearray(icmp.IcmpMessage(icmp.ECHO_REPLY, 0, 0, b"abcd").to_bytes())
    got = icmp.IcmpMessage.parse(raw)
    raw[8] = ord("z")
    assert bytes(got.payload) == b"zbcd"


@given(ipv4_headers, st.integers(0, 3000), st.integers(0, 30))
def test_icmp_error_payload(h, payload_len: int, padding: int) -> None:
    datagram = h.to_bytes(payload_len) + bytes(payload_len)
    quoted = icmp.error_payload(datagram + b"\xaa" * padding)
    # RFC 1812 §4.3.2.3: the error datagram (IP 20 + ICMP 8 + quote) fits in 576 bytes
    assert len(quoted) == min(len(datagram), 576 - 28)
    assert quoted == datagram[:len(quoted)]
    assert len(quoted) >= h.header_len  # the whole original header is always quoted


def test_udp_reasons_and_verify() -> None:
    src, dst = b"\xc6\x12\0\1", b"\xc6\x13\0\1"
    d = bytearray(udp.build_datagram(src, dst, 53, 5353, b"query"))
    assert _reason(udp.UdpHeader.parse, d[:7]) == "udp_truncated"
    bad = bytearray(d)
    bad[4:6] = (7).to_bytes(2, "big")
    assert _reason(udp.UdpHeader.parse, bad) == "udp_bad_length"
    bad[4:6] = (len(d) + 1).to_bytes(2, "big")
    assert _reason(udp.UdpHeader.parse, bad) == "udp_bad_length"
    assert udp.verify(src, dst, d + b"\0\0")  # trailing padding is not summed
    d[-1] ^= 1
    assert not udp.verify(src, dst, d)
    d[6:8] = b"\0\0"  # RFC 768: zero means the sender computed no checksum
    assert udp.verify(src, dst, d)


@given(addrs, addrs, payloads)
def test_udp_zero_checksum_is_sent_as_ffff(src, dst, payload) -> None:
    # Find a payload whose checksum computes to zero by appending a fix-up word.
    body = payload + bytes(len(payload) % 2)
    length = 8 + len(body) + 2
    s = ones_sum(b"\0\x01\0\x02" + length.to_bytes(2, "big") + body,
                 pseudo_header_sum(src, dst, 17, length))
    fix = (0xFFFF - s).to_bytes(2, "big")  # makes the total 0xFFFF, i.e. checksum 0
    d = udp.build_datagram(src, dst, 1, 2, body + fix)
    assert d[6:8] == b"\xff\xff"
    assert udp.verify(src, dst, d)


def test_flags_str() -> None:
    assert tcp.flags_str(tcp.SYN | tcp.ACK) == "S."
    assert tcp.flags_str(tcp.FIN | tcp.PSH | tcp.ACK) == "FP."
    assert tcp.flags_str(0) == "none"
