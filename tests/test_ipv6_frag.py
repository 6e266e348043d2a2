"""IPv6 reassembly (stack/frag6.py): RFC 8200 §4.5, RFC 5722, RFC 7112, RFC 6946."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.frag6 import FragmentError, Reassembler6, fragment
from stack.wire import ipv6ext
from stack.wire.ipv6 import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_UDP,
    Ipv6Header,
    ip6_bytes,
)

SRC = ip6_bytes("2001:2:0:1::1")
DST = ip6_bytes("2001:2:0:1::2")
T0 = 50.0


def fragments(unfrag: bytes, body: bytes, nxt: int, size: int, ident: int = 0x1234,
              hbh: bool = False) -> list[bytes]:
    out = []
    for off in range(0, len(body), size):
        chunk = body[off:off + size]
        more = off + size < len(body)
        fh = ipv6ext.FragmentHeader(nxt, off, more, ident).to_bytes()
        rest = unfrag + fh + chunk
        first_nh = IPPROTO_HOPOPTS if hbh else IPPROTO_FRAGMENT
        out.append(Ipv6Header(SRC, DST, first_nh).to_bytes(len(rest)) + rest)
    return out


def whole(unfrag: bytes, body: bytes, hbh: bool = False) -> bytes:
    if hbh:
        unfrag = bytes((IPPROTO_UDP,)) + unfrag[1:]
        rest = unfrag + body
        return Ipv6Header(SRC, DST, IPPROTO_HOPOPTS).to_bytes(len(rest)) + rest
    return Ipv6Header(SRC, DST, IPPROTO_UDP).to_bytes(len(body)) + body


def feed(r: Reassembler6, pkt: bytes, now: float = T0):
    return r.add(pkt, ipv6ext.walk(pkt), now)


def udp(n: int) -> bytes:
    return b"\x10\x00\x20\x00" + (8 + n).to_bytes(2, "big") + b"\0\0" + bytes(
        i & 0xFF for i in range(n))


@pytest.mark.parametrize("hbh", [False, True])
def test_in_order_and_reversed(hbh: bool) -> None:
    body = udp(3000)
    unfrag = ipv6ext.options_header(IPPROTO_FRAGMENT) if hbh else b""
    frags = fragments(unfrag, body, IPPROTO_UDP, 1232, hbh=hbh)
    assert len(frags) == 3
    for order in (frags, frags[::-1]):
        r = Reassembler6()
        results = [feed(r, f) for f in order]
        assert results[:-1] == [(None, None)] * 2
        assert results[-1] == (whole(unfrag, body, hbh), None)
        assert len(r) == 0 and r.held == 0
    c = ipv6ext.walk(whole(unfrag, body, hbh))
    assert c.upper_layer == IPPROTO_UDP and c.fragment is None


def test_only_the_first_fragments_next_header_counts() -> None:
    body = udp(2000)
    frags = fragments(b"", body, IPPROTO_UDP, 1232)
    later = bytearray(frags[1])
    later[40] = IPPROTO_DSTOPTS   # a different Next Header in a later fragment
    r = Reassembler6()
    feed(r, frags[0])
    assert feed(r, bytes(later)) == (whole(b"", body), None)


def test_overlap_drops_the_whole_datagram() -> None:
    body = udp(3000)
    frags = fragments(b"", body, IPPROTO_UDP, 1232)
    r = Reassembler6()
    feed(r, frags[0])
    # A fragment at offset 1224 overlaps the first (0..1232).
    fh = ipv6ext.FragmentHeader(IPPROTO_UDP, 1224, True, 0x1234).to_bytes() + bytes(16)
    bad = Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(len(fh)) + fh
    assert feed(r, bad) == (None, "frag6_overlap")
    assert len(r) == 0 and r.held == 0
    # The rest no longer completes anything: the datagram is gone.
    assert feed(r, frags[1]) == (None, None) and feed(r, frags[2]) == (None, None)


def test_exact_duplicate_dropped_alone() -> None:
    frags = fragments(b"", udp(2000), IPPROTO_UDP, 1232)
    r = Reassembler6()
    feed(r, frags[0])
    assert feed(r, frags[0]) == (None, "frag6_duplicate")
    assert feed(r, frags[1])[0] is not None


def test_parameter_problems() -> None:
    r = Reassembler6()
    fh = ipv6ext.FragmentHeader(IPPROTO_UDP, 8, True, 1).to_bytes() + bytes(12)
    pkt = Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(len(fh)) + fh
    assert feed(r, pkt) == (None, FragmentError("frag6_bad_length", 4))
    fh = ipv6ext.FragmentHeader(IPPROTO_UDP, 65528, False, 1).to_bytes() + bytes(16)
    pkt = Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(len(fh)) + fh
    assert feed(r, pkt) == (None, FragmentError("frag6_too_long", 42))
    fh = ipv6ext.FragmentHeader(IPPROTO_UDP, 8, True, 1).to_bytes()
    pkt = Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(len(fh)) + fh
    assert feed(r, pkt) == (None, "frag6_empty")
    assert len(r) == 0


def test_tiny_first_fragment_refused_by_the_walk() -> None:
    """RFC 7112: a first fragment that splits the UDP header never reaches the buffers."""
    fh = ipv6ext.FragmentHeader(IPPROTO_UDP, 0, True, 9).to_bytes() + bytes(4)
    pkt = Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(len(fh)) + fh
    with pytest.raises(ipv6ext.ParameterProblem) as e:
        ipv6ext.walk(pkt)
    assert e.value.code == 3


def test_atomic_fragment_is_no_fragment() -> None:
    fh = ipv6ext.FragmentHeader(IPPROTO_UDP, 0, False, 9).to_bytes() + udp(4)
    pkt = Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(len(fh)) + fh
    c = ipv6ext.walk(pkt)
    assert c.fragment.atomic and c.upper_layer == IPPROTO_UDP and c.offset == 48
    with pytest.raises(AssertionError):
        Reassembler6().add(pkt, c, T0)


def test_timeout_returns_the_first_fragment_and_frees_memory() -> None:
    frags = fragments(b"", udp(3000), IPPROTO_UDP, 1232)
    r = Reassembler6()
    feed(r, frags[1], T0)
    feed(r, frags[0], T0 + 1)
    assert r.next_deadline() == T0 + 60
    assert r.expire(T0 + 59.9) == []
    (quoted,) = r.expire(T0 + 60)
    assert quoted == frags[0]       # the whole first fragment, within 1232 bytes
    assert len(r) == 0 and r.held == 0 and r.next_deadline() is None
    # Without the first fragment there is nothing to quote.
    feed(r, frags[2], T0)
    assert r.expire(T0 + 61) == [] and len(r) == 0


def test_bounds() -> None:
    r = Reassembler6(max_datagrams=2, max_bytes=3000)
    for ident in range(2):
        feed(r, fragments(b"", udp(3000), IPPROTO_UDP, 1232, ident=ident)[0])
    third = fragments(b"", udp(3000), IPPROTO_UDP, 1232, ident=7)[0]
    assert feed(r, third) == (None, "frag6_table_full")
    r = Reassembler6(max_bytes=2000)
    frags = fragments(b"", udp(3000), IPPROTO_UDP, 1232)
    feed(r, frags[0])
    assert feed(r, frags[1]) == (None, "frag6_memory") and r.held == 0


def test_keys_separate_sources_and_identifications() -> None:
    body = udp(2000)
    a = fragments(b"", body, IPPROTO_UDP, 1232, ident=1)
    b = fragments(b"", body, IPPROTO_UDP, 1232, ident=2)
    r = Reassembler6()
    feed(r, a[0])
    feed(r, b[1])
    assert len(r) == 2
    assert feed(r, a[1])[0] == whole(b"", body)


@settings(max_examples=60)
@given(st.integers(1, 5000), st.sampled_from([8, 64, 600, 1232]), st.randoms())
def test_any_order_reassembles(n: int, size: int, rnd: random.Random) -> None:
    body = udp(n)
    frags = fragments(b"", body, IPPROTO_UDP, size)
    if len(frags) == 1:
        frags = fragments(b"", body + bytes(8), IPPROTO_UDP, (len(body) + 8) // 2 // 8 * 8)
        body = body + bytes(8)
    rnd.shuffle(frags)
    r = Reassembler6()
    results = [feed(r, f) for f in frags]
    assert [x for x, _ in results if x is not None] == [whole(b"", body)]
    assert all(reason is None for _, reason in results)


@settings(max_examples=60)
@given(st.integers(0, 9000), st.integers(1280, 9000), st.integers(0, 0xFFFFFFFF))
def test_fragment_then_reassemble(n: int, mtu: int, ident: int) -> None:
    pkt = whole(b"", udp(n))
    frags = fragment(pkt, mtu, ident)
    if len(pkt) <= mtu - 8:
        assert len(frags) == 1        # still a fragment: the caller decides when to call
    assert all(len(f) <= mtu for f in frags)
    chains = [ipv6ext.walk(f) for f in frags]
    assert all(c.fragment.identification == ident for c in chains)
    assert [c.fragment.more for c in chains] == [True] * (len(frags) - 1) + [False]
    if len(frags) == 1:
        assert chains[0].fragment.atomic
        return
    r = Reassembler6()
    results = [r.add(f, c, T0) for f, c in zip(frags, chains, strict=True)]
    assert results[-1] == (pkt, None)


def test_fragment_exact_layout() -> None:
    pkt = whole(b"", udp(2000))
    a, b = fragment(pkt, 1280, 0xABCDEF01)
    assert a == (Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(8 + 1232)
                 + bytes((IPPROTO_UDP, 0, 0, 1)) + bytes.fromhex("abcdef01") + pkt[40:1272])
    assert b == (Ipv6Header(SRC, DST, IPPROTO_FRAGMENT).to_bytes(8 + 776)
                 + bytes((IPPROTO_UDP, 0, 0x04, 0xD0)) + bytes.fromhex("abcdef01")
                 + pkt[1272:])
    with pytest.raises(ValueError):
        fragment(pkt, 1279, 1)
