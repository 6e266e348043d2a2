"""RFC 4987 SYN cookies: validity per tuple and lifetime, MSS encoding, TSval options."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack import seq
from stack.tcp.syncookies import (
    MSS_TABLE,
    SynCookies,
    decode_ts_options,
    encode_ts_options,
)

A = bytes([198, 18, 0, 1])
B = bytes([198, 19, 0, 1])
KEY = b"cookie secret"


def test_roundtrip_and_mss_rounding():
    sc = SynCookies(KEY)
    cookie, mss = sc.make(A, 40000, B, 80, 12345, 1460, 1000.0)
    assert mss == 1460
    assert sc.check(A, 40000, B, 80, 12345, cookie, 1000.5) == 1460
    assert sc.make(A, 1, B, 2, 0, 1400, 0.0)[1] == 1380
    assert sc.make(A, 1, B, 2, 0, 9000, 0.0)[1] == 8940
    assert sc.make(A, 1, B, 2, 0, 100, 0.0)[1] == 536  # below the table: smallest entry


def test_layout_counter_in_top_bits():
    sc = SynCookies(KEY)
    cookie, _ = sc.make(A, 1, B, 2, 7, 1460, 64.0 * 37)
    assert cookie >> 27 == 37 % 32
    assert (cookie >> 24) & 7 == MSS_TABLE.index(1460)


def test_lifetime_boundaries():
    sc = SynCookies(KEY)
    made = 64.0 * 10 + 63.9  # just before the counter ticks
    cookie, _ = sc.make(A, 1, B, 2, 99, 1460, made)
    assert sc.check(A, 1, B, 2, 99, cookie, made + 64.0) == 1460  # next period: still valid
    assert sc.check(A, 1, B, 2, 99, cookie, 64.0 * 12) is None   # two periods on: expired
    made = 64.0 * 10  # just after a tick: valid for nearly 128 s
    cookie, _ = sc.make(A, 1, B, 2, 99, 1460, made)
    assert sc.check(A, 1, B, 2, 99, cookie, made + 127.9) == 1460
    assert sc.check(A, 1, B, 2, 99, cookie, made + 128.0) is None
    # after 32 periods the 5-bit counter repeats; the MAC still tells them apart
    assert sc.check(A, 1, B, 2, 99, cookie, made + 32 * 64.0) is None
    assert sc.rejected == 3 and sc.checked == 5


def test_wrong_inputs():
    sc = SynCookies(KEY)
    cookie, _ = sc.make(A, 1, B, 2, 99, 1460, 5.0)
    assert sc.check(A, 1, B, 2, 98, cookie, 5.0) is None          # other client ISN
    assert sc.check(A, 1, B, 2, 99, cookie ^ (1 << 24), 5.0) is None  # MSS bits altered
    assert sc.check(A, 1, B, 2, 99, -1, 5.0) is None
    assert sc.check(A, 1, B, 2, 99, 1 << 32, 5.0) is None
    assert SynCookies(b"other").check(A, 1, B, 2, 99, cookie, 5.0) is None
    with pytest.raises(ValueError):
        sc.make(A, 1, B, 2, 1 << 32, 1460, 5.0)
    with pytest.raises(ValueError):
        sc.make(A, 1, B, 2, 0, 0, 5.0)
    with pytest.raises(ValueError):
        sc.check(A, 70000, B, 2, 0, cookie, 5.0)
    with pytest.raises(ValueError):
        sc.check(A, 1, B, 2, 0, cookie, math.inf)


addrs = st.binary(min_size=4, max_size=4)
ports = st.integers(0, 65535)
tuples = st.tuples(addrs, ports, addrs, ports)
isns = st.integers(0, seq.MASK)


@given(tuples, isns, st.integers(1, 65535), st.floats(0, 1e9), st.floats(0, 63.99))
def test_valid_for_right_tuple_within_lifetime(t, isn, mss, now, age):
    sc = SynCookies(KEY)
    cookie, enc = sc.make(*t, isn, mss, now)
    assert enc in MSS_TABLE and (enc <= mss or enc == MSS_TABLE[0])
    assert sc.check(*t, isn, cookie, now + age) == enc


@given(tuples, tuples, isns, st.floats(0, 1e9))
def test_fails_for_other_tuple(t1, t2, isn, now):
    if t1 == t2:
        return
    sc = SynCookies(KEY)
    cookie, _ = sc.make(*t1, isn, 1460, now)
    # a 24-bit MAC: a false accept has probability 2**-24 per check
    assert sc.check(*t2, isn, cookie, now) is None


@given(tuples, isns, st.floats(0, 1e9), st.floats(128.0, 1e6))
def test_fails_when_too_old(t, isn, now, age):
    sc = SynCookies(KEY)
    cookie, _ = sc.make(*t, isn, 1460, now)
    assert sc.check(*t, isn, cookie, now + age) is None


@given(st.integers(0, seq.MASK), st.one_of(st.none(), st.integers(0, 14)), st.booleans())
def test_ts_options_roundtrip(tsval, wscale, sack):
    enc = encode_ts_options(tsval, wscale, sack)
    assert decode_ts_options(enc) == (wscale, sack)
    assert seq.le(enc, tsval) and seq.sub(tsval, enc) < 64


def test_ts_options_rejects():
    assert decode_ts_options(0x20) is None  # bit 5 is never set by the encoder
    assert decode_ts_options(15) == (None, False)
    assert decode_ts_options(0x1E) == (14, True)
    with pytest.raises(ValueError):
        encode_ts_options(5, 15, False)
