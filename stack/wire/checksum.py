"""The Internet checksum: full (RFC 1071) and incremental (RFC 1624), and the IPv4
and IPv6 pseudo-headers.

Two kinds of 16-bit values appear here and must not be confused:

* a *sum* is the folded one's-complement sum of some 16-bit words, NOT complemented
  (what ``ones_sum`` returns, and what a frame handed over with
  VIRTIO_NET_HDR_F_NEEDS_CSUM carries in its checksum field: the pseudo-header sum);
* a *checksum* is the complement of a sum, the value a header carries when the
  checksum is complete.

``update*`` functions patch checksums, ``adjust_sum*`` functions patch sums.
"""

from __future__ import annotations

import struct

from stack.wire.errors import BytesLike

_MASK = 0xFFFF
_WORDS2 = struct.Struct("!HH")


def fold(x: int) -> int:
    """Fold a wide non-negative sum to 16 bits with end-around carry (RFC 1071 §2).

    0 stays 0; any positive value maps to the one value in 1..0xFFFF congruent to it
    modulo 0xFFFF, which is exactly what repeated end-around carry produces.
    """
    if x <= 0:
        if x == 0:
            return 0
        raise ValueError(f"cannot fold a negative sum: {x}")
    if x <= _MASK:
        return x
    return (x - 1) % _MASK + 1


def ones_sum(data: BytesLike, start: int = 0) -> int:
    """Folded 16-bit one's-complement sum of ``data`` plus ``start`` (not complemented).

    Words are big-endian; an odd trailing byte is padded with a zero byte (RFC 1071
    §4.1). Instead of a loop over words, ``data`` is read as one big integer: because
    2**16 ≡ 1 (mod 0xFFFF), that integer is congruent to the sum of its 16-bit words,
    so one reduction modulo 0xFFFF gives the sum up to the 0/0xFFFF ambiguity, which
    ``fold`` resolves (the sum is 0 only when every word and ``start`` are 0).
    """
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8  # the zero pad byte after the last byte
    return fold(n + start)


def checksum(data: BytesLike, start: int = 0) -> int:
    """The Internet checksum of ``data`` (RFC 1071): the complemented ``ones_sum``."""
    return ~ones_sum(data, start) & _MASK


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Folded sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768), not complemented.

    The pseudo-header is src, dst, a zero byte, the protocol and the upper-layer length.
    """
    s1, s2 = _WORDS2.unpack(src)
    d1, d2 = _WORDS2.unpack(dst)
    return fold(s1 + s2 + d1 + d2 + proto + length)


def pseudo_header_sum6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Folded sum of the IPv6 pseudo-header (RFC 8200 §8.1), not complemented.

    The pseudo-header is the 16-byte source and destination, the 32-bit upper-layer
    length and three zero bytes before the upper-layer protocol number. The
    destination is the final one (after a Routing header's last hop).
    """
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses must be 16 bytes")
    n = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    # 2**16 ≡ 1 (mod 0xFFFF): each 128-bit address is congruent to the sum of its
    # words, as in ones_sum; the 32-bit length adds its two words.
    return fold(n + (length >> 16) + (length & _MASK) + next_header)


def adjust_sum(s: int, old: int, new: int) -> int:
    """Replace 16-bit word ``old`` by ``new`` in the non-complemented folded sum ``s``.

    Used on frames whose checksum field holds a partial (pseudo-header) sum that the
    kernel will finish: subtracting in one's complement is adding the complement.
    """
    return fold(s + (~old & _MASK) + new)


def adjust_sum32(s: int, old: int, new: int) -> int:
    """``adjust_sum`` for a 32-bit field (two 16-bit words at an even offset)."""
    old_hi, old_lo = old >> 16 & _MASK, old & _MASK
    new_hi, new_lo = new >> 16 & _MASK, new & _MASK
    return fold(s + (_MASK - old_hi) + (_MASK - old_lo) + new_hi + new_lo)


def _check_pair(old: BytesLike, new: BytesLike) -> None:
    if len(old) != len(new) or len(old) & 1:
        raise ValueError("old and new fields must have the same, even length")


def adjust_sum_bytes(s: int, old: BytesLike, new: BytesLike) -> int:
    """``adjust_sum`` for a field of any even length at an even offset."""
    _check_pair(old, new)
    # ~x ≡ -x (mod 0xFFFF): adding (0xFFFF - sum(old)) removes old's words.
    return fold(s + (_MASK - ones_sum(old)) + ones_sum(new))


def update16(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for a complemented checksum field: HC' = ~(~HC + ~m + m').

    Eqn. 3 (not eqn. 2) is used so that the result never becomes 0xFFFF (-0) when the
    full computation would give 0 (RFC 1624 §3).
    """
    return ~fold((~csum & _MASK) + (~old & _MASK) + new) & _MASK


def update32(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for a 32-bit field (two words at an even offset)."""
    return ~adjust_sum32(~csum & _MASK, old, new) & _MASK


def update_bytes(csum: int, old: BytesLike, new: BytesLike) -> int:
    """RFC 1624 eqn. 3 for a field of any even length at an even offset."""
    return ~adjust_sum_bytes(~csum & _MASK, old, new) & _MASK
