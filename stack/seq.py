"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982).

Every comparison of TCP sequence, acknowledgement or timestamp values goes
through here. ``a < b`` means ``a`` comes before ``b`` on the circle: their
difference, taken as a signed 32-bit number, is negative.
"""

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (``n`` may be negative)."""
    return (a + n) & MASK


def sub(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a``, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def lt(a: int, b: int) -> bool:
    """``a`` is before ``b``."""
    return ((a - b) & MASK) >= HALF


def le(a: int, b: int) -> bool:
    """``a`` is before or equal to ``b``."""
    return a == b or ((a - b) & MASK) >= HALF


def gt(a: int, b: int) -> bool:
    """``a`` is after ``b``."""
    return a != b and ((a - b) & MASK) < HALF


def ge(a: int, b: int) -> bool:
    """``a`` is after or equal to ``b``."""
    return ((a - b) & MASK) < HALF


def between(lo: int, x: int, hi: int) -> bool:
    """``lo <= x <= hi`` on the circle (hi measured from lo)."""
    return ((x - lo) & MASK) <= ((hi - lo) & MASK)


def in_window(start: int, x: int, size: int) -> bool:
    """``start <= x < start + size`` (RFC 9293 acceptability tests)."""
    return ((x - start) & MASK) < size


def max_seq(a: int, b: int) -> int:
    """The later of two sequence numbers."""
    return b if lt(a, b) else a


def min_seq(a: int, b: int) -> int:
    """The earlier of two sequence numbers."""
    return a if lt(a, b) else b
