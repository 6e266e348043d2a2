"""Full (RFC 1071) and incremental (RFC 1624) checksums against naive references."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from wire_strategies import addrs, ipv4_headers, payloads, tcp_headers, u16, u32

from stack.wire import checksum as ck
from stack.wire import tcp


def naive_sum(data: bytes, start: int = 0) -> int:
    """Word-by-word one's-complement sum with end-around carry after every add."""
    if len(data) % 2:
        data = data + b"\0"
    s = start
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_rfc1071_example() -> None:
    # RFC 1071 §3 worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ck.ones_sum(data) == 0xDDF2
    assert ck.checksum(data) == 0x220D


def test_rfc1624_example() -> None:
    # RFC 1624 §4: the other words sum to 0xCD7A, m = 0x5555 becomes 0x3285, and the
    # new checksum must be 0x0000 (eqn. 2 would wrongly give 0xFFFF).
    hc = ~ck.fold(0xCD7A + 0x5555) & 0xFFFF
    assert hc == 0xDD2F
    assert ck.update16(hc, 0x5555, 0x3285) == 0x0000


def test_edges() -> None:
    assert ck.ones_sum(b"") == 0
    assert ck.ones_sum(b"\0\0\0") == 0
    assert ck.ones_sum(b"\xff\xff") == 0xFFFF
    assert ck.ones_sum(b"\xff\xff\xff\xff") == 0xFFFF
    assert ck.ones_sum(b"\x01") == 0x0100  # odd byte is the high half of a padded word
    assert ck.ones_sum(b"", 0x1FFFE) == 0xFFFF
    assert ck.fold(0x10000) == 1
    with pytest.raises(ValueError):
        ck.fold(-1)


@settings(deadline=None)  # heavy example; no flaky deadline on a loaded machine
@given(st.integers(0, 70_000) | st.sampled_from([65_535, 65_536, 69_999, 70_000]),
       st.integers(0, 2**32), st.integers(0, 0x3FFFF))
def test_ones_sum_matches_naive(n: int, seed: int, start: int) -> None:
    # Hypothesis cannot draw 70 KB binaries, so draw a length and a seed instead.
    data = random.Random(seed).randbytes(n)
    assert ck.ones_sum(data, start) == naive_sum(data, start)
    assert ck.ones_sum(memoryview(data), start) == ck.ones_sum(bytearray(data), start)
    assert ck.checksum(data, start) == ~naive_sum(data, start) & 0xFFFF


@given(st.binary(max_size=3000), st.sampled_from([0, 1, 0xFFFF, 0xFFFE, 0x12345]))
def test_ones_sum_small_and_special_start(data: bytes, start: int) -> None:
    assert ck.ones_sum(data, start) == naive_sum(data, start)


@given(addrs, addrs, st.integers(0, 255), u16)
def test_pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> None:
    ph = src + dst + bytes((0, proto)) + length.to_bytes(2, "big")
    assert ck.pseudo_header_sum(src, dst, proto, length) == naive_sum(ph)


def _put(buf: bytearray, off: int, size: int, value: int) -> int:
    old = int.from_bytes(buf[off:off + size], "big")
    buf[off:off + size] = value.to_bytes(size, "big")
    return old


def _ip_bytes(hdr) -> bytearray:
    return bytearray(hdr.to_bytes(0))


@given(ipv4_headers, st.data())
def test_update_ipv4_header_matches_recompute(hdr, data) -> None:
    buf = _ip_bytes(hdr)
    hc = int.from_bytes(buf[10:12], "big")
    size = data.draw(st.sampled_from([2, 4]))
    # any even offset whose field does not overlap the checksum itself (bytes 10-11)
    offs = [o for o in range(0, len(buf) - size + 1, 2) if o + size <= 10 or o >= 12]
    off = data.draw(st.sampled_from(offs))
    new = data.draw(u16 if size == 2 else u32)
    old = _put(buf, off, size, new)
    update = ck.update16 if size == 2 else ck.update32
    buf[10:12] = b"\0\0"
    expected = ck.checksum(buf)
    assert update(hc, old, new) == expected
    assert ck.update_bytes(hc, old.to_bytes(size, "big"), new.to_bytes(size, "big")) == expected


@given(tcp_headers(), payloads, addrs, addrs, st.data())
def test_update_tcp_segment_matches_recompute(hdr, payload, src, dst, data) -> None:
    seg = bytearray(tcp.build_segment(src, dst, hdr, payload))
    hc = int.from_bytes(seg[16:18], "big")
    field = data.draw(st.sampled_from(["sport", "dport", "seq", "ack", "win", "src", "dst"]))
    off, size = {"sport": (0, 2), "dport": (2, 2), "seq": (4, 4), "ack": (8, 4),
                 "win": (14, 2), "src": (0, 4), "dst": (0, 4)}[field]
    new = data.draw(u16 if size == 2 else u32)
    if field in ("src", "dst"):
        # an address lives in the pseudo-header, not in the segment
        old = int.from_bytes(src if field == "src" else dst, "big")
        if field == "src":
            src = new.to_bytes(4, "big")
        else:
            dst = new.to_bytes(4, "big")
    else:
        old = _put(seg, off, size, new)
    update = ck.update16 if size == 2 else ck.update32
    assert update(hc, old, new) == tcp.tcp_checksum(src, dst, seg)
    seg[16:18] = update(hc, old, new).to_bytes(2, "big")
    assert tcp.verify_tcp_checksum(src, dst, seg)


@given(addrs, addrs, addrs, st.integers(20, 0xFFFF))
def test_adjust_partial_pseudo_header_sum(src, dst, new_src, length) -> None:
    # VIRTIO_NET_HDR_F_NEEDS_CSUM frames carry the folded pseudo-header sum; a relay
    # that rewrites the source address patches it with adjust_sum32.
    partial = ck.pseudo_header_sum(src, dst, 6, length)
    old = int.from_bytes(src, "big")
    new = int.from_bytes(new_src, "big")
    assert ck.adjust_sum32(partial, old, new) == ck.pseudo_header_sum(new_src, dst, 6, length)
    assert ck.adjust_sum_bytes(partial, src, new_src) == ck.pseudo_header_sum(
        new_src, dst, 6, length)
    # length change (e.g. a split segment): one 16-bit word of the pseudo-header
    assert ck.adjust_sum(partial, length, 20) == ck.pseudo_header_sum(src, dst, 6, 20)


@given(st.binary(min_size=2, max_size=300).map(lambda b: b[:len(b) & ~1]), st.data())
def test_adjust_sum_matches_recompute(buf, data) -> None:
    buf = bytearray(buf)
    s = ck.ones_sum(buf)
    off = data.draw(st.integers(0, len(buf) // 2 - 1)) * 2
    size = data.draw(st.sampled_from([2, 4] if off + 4 <= len(buf) else [2]))
    new = data.draw(u16 if size == 2 else u32)
    old_bytes = bytes(buf[off:off + size])
    old = _put(buf, off, size, new)
    assume(any(buf))  # all-zero data sums to 0, the one value adjust cannot produce
    adjust = ck.adjust_sum if size == 2 else ck.adjust_sum32
    assert adjust(s, old, new) == ck.ones_sum(buf)
    assert ck.adjust_sum_bytes(s, old_bytes, new.to_bytes(size, "big")) == ck.ones_sum(buf)


def test_update_bytes_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError):
        ck.update_bytes(0, b"\0\0", b"\0\0\0\0")
    with pytest.raises(ValueError):
        ck.adjust_sum_bytes(0, b"\0", b"\1")
