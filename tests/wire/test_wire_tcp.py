"""TCP specifics: option rejection, option offsets for in-place rewriting, checksums."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from wire_strategies import addrs, payloads, tcp_headers

from stack.wire import WireError, tcp

SRC = bytes((198, 18, 0, 1))
DST = bytes((198, 19, 0, 1))


def _reason(fn, *args) -> str:
    with pytest.raises(WireError) as e:
        fn(*args)
    return e.value.reason


@pytest.mark.parametrize("opts", [
    b"\x02",                      # kind without length
    b"\x02\x01\x00\x00",          # length < 2
    b"\x02\x04\x05",              # runs past the end
    b"\x02\x03\x05\x01",          # MSS length 3
    b"\x03\x04\x07\x01",          # WS length 4
    b"\x04\x03\x00\x01",          # SACK_PERM length 3
    b"\x08\x08" + bytes(6),       # TS length 8
    b"\x05\x02\x01\x01",          # SACK with no block
    b"\x05\x06" + bytes(4),       # SACK length not 2 + 8n
    b"\x05\x2a" + bytes(40),      # SACK with 5 blocks
    b"\x01\xfe\x00",              # unknown kind, length 0
])
def test_bad_options(opts: bytes) -> None:
    assert _reason(tcp.parse_options, opts) == "tcp_bad_option"


def test_option_semantics() -> None:
    o = tcp.parse_options(b"\x01\x03\x03\x0f\x00\x02\x04\x05\xb4")  # WS 15, then EOL
    assert o == tcp.TcpOptions(wscale=15)  # kept as given; the TCP layer clamps to 14
    o = tcp.parse_options(b"\x1e\x03\xaa\x01")
    assert o.unknown == ((0x1E, b"\xaa"),)
    assert tcp.parse_options(b"") == tcp.TcpOptions()


def _header(doff: int, length: int) -> bytes:
    h = bytearray(length)
    h[12] = doff << 4
    return bytes(h)


def test_header_reasons() -> None:
    assert _reason(tcp.TcpHeader.parse, bytes(19)) == "tcp_truncated"
    assert _reason(tcp.TcpHeader.parse, _header(4, 20)) == "tcp_bad_data_offset"
    assert _reason(tcp.TcpHeader.parse, _header(6, 20)) == "tcp_bad_data_offset"
    assert _reason(tcp.TcpHeader.parse, _header(6, 20) + b"\x01\x01\x01\x02") == "tcp_bad_option"
    h = tcp.TcpHeader.parse(_header(6, 24))  # four EOL bytes of options
    assert h.header_len == 24 and h.options == tcp.TcpOptions()
    assert _reason(tcp.tcp_checksum, SRC, DST, bytes(17)) == "tcp_truncated"


@given(tcp_headers())
def test_option_offsets_point_at_the_values(h: tcp.TcpHeader) -> None:
    raw = h.to_bytes()
    offs = tcp.option_offsets(raw, h.header_len)
    o = h.options
    if o.mss is None:
        assert offs.mss == -1
    else:
        assert struct.unpack_from("!H", raw, offs.mss)[0] == o.mss
    if o.wscale is None:
        assert offs.wscale == -1
    else:
        assert raw[offs.wscale] == o.wscale
    if o.timestamp is None:
        assert offs.timestamp == -1
    else:
        assert struct.unpack_from("!II", raw, offs.timestamp) == o.timestamp
    assert offs.sack_count == len(o.sack_blocks)
    if o.sack_blocks:
        got = [struct.unpack_from("!II", raw, offs.sack + 8 * i) for i in range(offs.sack_count)]
        assert tuple(got) == o.sack_blocks
    else:
        assert offs.sack == -1


def test_option_offsets_rewrite_in_place() -> None:
    h = tcp.TcpHeader(1, 2, 3, 4, tcp.ACK, 100,
                      options=tcp.TcpOptions(timestamp=(7, 9), sack_blocks=((10, 20), (30, 40))))
    buf = bytearray(h.to_bytes())
    offs = tcp.option_offsets(buf, len(buf))
    struct.pack_into("!II", buf, offs.timestamp, 70, 90)
    struct.pack_into("!II", buf, offs.sack + 8, 300, 400)
    assert tcp.TcpHeader.parse(buf).options == tcp.TcpOptions(
        timestamp=(70, 90), sack_blocks=((10, 20), (300, 400)))


def test_option_offsets_reasons() -> None:
    raw = _header(6, 24)
    assert _reason(tcp.option_offsets, raw, 19) == "tcp_bad_data_offset"
    assert _reason(tcp.option_offsets, raw, 28) == "tcp_bad_data_offset"
    bad = raw[:20] + b"\x08\x0a\x00\x00"
    assert _reason(tcp.option_offsets, bad, 24) == "tcp_bad_option"
    assert tcp.option_offsets(raw, 20) == tcp.OptionOffsets()


@given(tcp_headers(), payloads, addrs, addrs)
def test_checksum_ignores_stored_field(h, payload, src, dst) -> None:
    seg = bytearray(tcp.build_segment(src, dst, h, payload))
    good = struct.unpack_from("!H", seg, tcp.TCP_CSUM)[0]
    for junk in (0, 0xFFFF, 0x1234, good):
        struct.pack_into("!H", seg, tcp.TCP_CSUM, junk)
        assert tcp.tcp_checksum(src, dst, seg) == good
        assert tcp.tcp_checksum(src, dst, memoryview(seg)) == good
    assert tcp.verify_tcp_checksum(src, dst, seg)


def test_large_segment_checksum() -> None:
    payload = bytes(range(256)) * 255 + b"\x01"  # 65281 bytes, odd length
    h = tcp.TcpHeader(40000, 80, 1, 2, tcp.ACK | tcp.PSH, 512)
    seg = tcp.build_segment(SRC, DST, h, payload)
    assert tcp.verify_tcp_checksum(SRC, DST, seg)
    assert not tcp.verify_tcp_checksum(SRC, bytes((198, 19, 0, 2)), seg)
