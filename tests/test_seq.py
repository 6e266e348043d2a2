"""Sequence arithmetic modulo 2**32, across wraparound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stack import seq

u32 = st.integers(0, 2**32 - 1)
small = st.integers(1, 2**31 - 1)


def test_wraparound_examples():
    assert seq.lt(0xFFFFFFF0, 0x10)
    assert seq.gt(0x10, 0xFFFFFFF0)
    assert seq.add(0xFFFFFFFF, 1) == 0
    assert seq.sub(0x5, 0xFFFFFFFB) == 10
    assert seq.in_window(0xFFFFFFFE, 1, 4) and not seq.in_window(0xFFFFFFFE, 2, 4)
    assert seq.max_seq(0xFFFFFFF0, 0x10) == 0x10 and seq.min_seq(0xFFFFFFF0, 0x10) == 0xFFFFFFF0


@given(u32, small)
def test_order_after_adding(a, n):
    b = seq.add(a, n)
    assert seq.lt(a, b) and seq.le(a, b) and seq.gt(b, a) and seq.ge(b, a)
    assert not seq.lt(b, a) and not seq.ge(a, b)
    assert seq.sub(b, a) == n and seq.sub(a, b) == -n
    assert seq.between(a, b, seq.add(b, 1))


@given(u32)
def test_equal_is_le_and_ge(a):
    assert seq.le(a, a) and seq.ge(a, a) and not seq.lt(a, a) and not seq.gt(a, a)


@given(u32, st.integers(0, 2**32 - 1), st.integers(0, 2**31))
def test_in_window_matches_offset(start, x, size):
    assert seq.in_window(start, x, size) == (((x - start) % 2**32) < size)
