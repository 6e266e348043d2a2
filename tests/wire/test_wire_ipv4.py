"""IPv4 specifics: rejection reasons, option walking, strip_options, address helpers."""

from __future__ import annotations

import dataclasses
import struct

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import ipv4_headers, ipv4_options, payloads

from stack.wire import WireError, ipv4
from stack.wire.checksum import checksum

SRC = bytes((198, 18, 0, 1))
DST = bytes((198, 19, 0, 1))


def _datagram(options: bytes = b"", payload: bytes = b"data") -> bytearray:
    h = ipv4.Ipv4Header(SRC, DST, ipv4.IPPROTO_UDP, options=options)
    return bytearray(h.to_bytes(len(payload)) + payload)


def _refresh_checksum(buf: bytearray) -> None:
    hlen = (buf[0] & 0x0F) * 4
    buf[10:12] = b"\0\0"
    buf[10:12] = struct.pack("!H", checksum(buf[:hlen]))


def _reason(buf: bytes | bytearray, **kw: bool) -> str:
    with pytest.raises(WireError) as e:
        ipv4.Ipv4Header.parse(buf, **kw)
    return e.value.reason


def test_reasons() -> None:
    good = _datagram()
    assert _reason(good[:19]) == "ipv4_truncated"
    bad = bytearray(good)
    bad[0] = 0x65
    assert _reason(bad) == "ipv4_bad_version"
    bad = bytearray(good)
    bad[0] = 0x44
    assert _reason(bad, verify_checksum=False) == "ipv4_bad_ihl"
    bad[0] = 0x4F  # 60-byte header in a 24-byte buffer
    assert _reason(bad, verify_checksum=False) == "ipv4_bad_ihl"
    bad = bytearray(good)
    bad[2:4] = struct.pack("!H", 19)
    assert _reason(bad, verify_checksum=False) == "ipv4_bad_total_length"
    bad[2:4] = struct.pack("!H", len(good) + 1)
    assert _reason(bad, verify_checksum=False) == "ipv4_bad_total_length"
    bad = bytearray(good)
    bad[8] ^= 1  # TTL changed, checksum not
    assert _reason(bad) == "ipv4_bad_checksum"
    assert ipv4.Ipv4Header.parse(bad, verify_checksum=False).ttl == 65
    bad = _datagram(options=b"\x07\x09\x00\x00")  # length runs past the options
    assert _reason(bad) == "ipv4_bad_options"


def test_ethernet_padding_is_accepted() -> None:
    buf = _datagram(payload=b"x") + bytes(25)
    h = ipv4.Ipv4Header.parse(buf)
    assert h.total_length == 21


@pytest.mark.parametrize("opts, want", [
    (b"", []),
    (b"\x01\x01\x00\xff", []),  # NOPs, then EOL ends the walk even before junk
    (b"\x01\x83\x07\x04\x01\x02\x03\x04\x00\x00\x00\x00", [(0x83, b"\x04\x01\x02\x03\x04")]),
    (b"\x94\x04\x00\x00", [(0x94, b"\x00\x00")]),  # Router Alert (RFC 2113)
])
def test_parse_options(opts: bytes, want: list) -> None:
    assert ipv4.parse_options(opts) == want


@pytest.mark.parametrize("opts", [b"\x83", b"\x83\x01", b"\x83\x00\x00\x00", b"\x83\x05\x00\x00"])
def test_parse_options_rejects(opts: bytes) -> None:
    with pytest.raises(WireError) as e:
        ipv4.parse_options(opts)
    assert e.value.reason == "ipv4_bad_options"


@given(ipv4_headers.filter(lambda h: h.options), payloads, st.integers(0, 20))
def test_strip_options(h: ipv4.Ipv4Header, payload: bytes, lead: int) -> None:
    raw = h.to_bytes(len(payload)) + payload
    buf = bytearray(b"\xee" * lead + raw + b"\xcc" * 3)  # a frame header before, padding after
    before = ipv4.Ipv4Header.parse(raw)
    optlen = len(h.options)
    payload_at = lead + h.header_len
    new_off = ipv4.strip_options(buf, lead)
    assert new_off == lead + optlen
    after = ipv4.Ipv4Header.parse(memoryview(buf)[new_off:])  # checksum verified
    assert after == dataclasses.replace(before, options=b"", checksum=after.checksum,
                                        total_length=before.total_length - optlen)
    assert after.header_len == 20
    assert buf[payload_at:payload_at + len(payload)] == payload  # payload did not move
    assert buf[new_off + 20:new_off + after.total_length] == payload
    assert buf[:lead] == b"\xee" * lead
    d = dpkt.ip.IP(bytes(buf[new_off:new_off + after.total_length]))
    assert (d.src, d.dst, d.hl, d.len, d.p) == (h.src, h.dst, 5, after.total_length, h.proto)


def test_strip_options_without_options_is_a_no_op() -> None:
    buf = _datagram()
    copy = bytes(buf)
    assert ipv4.strip_options(buf, 0) == 0
    assert buf == copy


def test_strip_options_rejects_bad_header() -> None:
    buf = _datagram(options=b"\x01\x01\x01\x00")
    buf[8] ^= 1
    with pytest.raises(WireError):
        ipv4.strip_options(buf, 0)
    _refresh_checksum(buf)
    assert ipv4.strip_options(buf, 0) == 4


@given(ipv4_options())
def test_header_len_counts_padded_options(opts: bytes) -> None:
    h = ipv4.Ipv4Header(SRC, DST, 6, options=opts.rstrip(b"\0"))
    assert h.header_len == 20 + len(opts.rstrip(b"\0")) + (-len(opts.rstrip(b"\0")) % 4)
    assert len(h.to_bytes(0)) == h.header_len


def test_address_helpers() -> None:
    assert ipv4.ip_str(SRC) == "198.18.0.1"
    assert ipv4.ip_bytes("198.19.0.1") == DST
    for bad in ("198.18.0", "198.18.0.256", "a.b.c.d", ""):
        with pytest.raises(ValueError):
            ipv4.ip_bytes(bad)
    with pytest.raises(ValueError):
        ipv4.ip_str(b"\0\0\0")
