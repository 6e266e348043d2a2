"""SYN cookies (RFC 4987 §3.6): a listener under SYN flood keeps no state and
encodes what it must remember in the ISN of its SYN-ACK.

Cookie layout (32 bits, our ISN):

    bits 31..27  t mod 32, t = floor(now / 64) (a slowly ticking counter)
    bits 26..24  index into MSS_TABLE (the client's MSS, rounded down)
    bits 23..0   keyed BLAKE2s over (4-tuple, client ISN, t, MSS index)

The final ACK of the handshake acknowledges cookie + 1 and carries client ISN + 1,
so the caller passes ``ack - 1`` and ``seq - 1`` to :meth:`SynCookies.check`.
Options that a cookie cannot hold (window scale, SACK-permitted) can ride in the
low 6 bits of the SYN-ACK's TSval, which the client echoes in TSecr.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct

from stack import seq
from stack.tcp.isn import prepare_key, tuple_bytes

#: MSS values a cookie can carry (3 bits); the client's MSS is rounded down to one.
MSS_TABLE = (536, 1220, 1300, 1380, 1440, 1460, 4312, 8940)
#: RFC 4987 §3.6: the counter advances every 64 seconds.
COUNTER_PERIOD = 64.0
#: A cookie is accepted while the counter is at most this many periods further on.
MAX_AGE_PERIODS = 2
_MAC_BITS = 24
_MAC_MASK = (1 << _MAC_BITS) - 1

#: TSval bits used to carry options: 4 bits window scale, 1 bit SACK-permitted.
TS_OPT_BITS = 6
TS_OPT_MASK = (1 << TS_OPT_BITS) - 1
_WSCALE_NONE = 0xF
_SACK_BIT = 0x10
#: RFC 7323 §2.3: the largest shift count.
MAX_WSCALE = 14


def mss_index(mss: int) -> int:
    """Index of the largest MSS_TABLE entry not above ``mss`` (0 when all are)."""
    if not isinstance(mss, int) or mss <= 0:
        raise ValueError(f"MSS must be a positive int, got {mss!r}")
    best = 0
    for i, value in enumerate(MSS_TABLE):
        if value <= mss:
            best = i
    return best


def _check_isn(client_isn: int) -> None:
    if not isinstance(client_isn, int) or not 0 <= client_isn <= seq.MASK:
        raise ValueError(f"client ISN must be a 32-bit unsigned int, got {client_isn!r}")


def _counter(now: float) -> int:
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now!r}")
    return int(now // COUNTER_PERIOD)


class SynCookies:
    """Makes and checks SYN cookies with one secret (keep it for the listener's life)."""

    __slots__ = ("_key", "checked", "rejected")

    def __init__(self, secret: bytes) -> None:
        self._key = prepare_key(secret)
        #: Cookies checked and how many of them failed (a counted drop for the caller).
        self.checked = 0
        self.rejected = 0

    def _mac(self, tup: bytes, client_isn: int, t: int, idx: int) -> int:
        msg = tup + struct.pack("!IQB", client_isn, t & 0xFFFF_FFFF_FFFF_FFFF, idx)
        digest = hashlib.blake2s(msg, key=self._key, digest_size=8).digest()
        return int.from_bytes(digest[:3], "big") & _MAC_MASK

    def make(self, src: bytes, sport: int, dst: bytes, dport: int,
             client_isn: int, mss: int, now: float) -> tuple[int, int]:
        """Our ISN for the SYN-ACK and the MSS it encodes (``mss`` rounded down)."""
        _check_isn(client_isn)
        idx = mss_index(mss)
        t = _counter(now)
        mac = self._mac(tuple_bytes(src, sport, dst, dport), client_isn, t, idx)
        cookie = ((t & 0x1F) << 27) | (idx << 24) | mac
        return cookie, MSS_TABLE[idx]

    def check(self, src: bytes, sport: int, dst: bytes, dport: int,
              client_isn: int, cookie: int, now: float) -> int | None:
        """The MSS encoded in ``cookie``, or None if it is forged, for another
        connection or older than MAX_AGE_PERIODS counter periods."""
        _check_isn(client_isn)
        tup = tuple_bytes(src, sport, dst, dport)
        count = _counter(now)
        self.checked += 1
        if isinstance(cookie, int) and 0 <= cookie <= seq.MASK:
            t5, idx, mac = cookie >> 27, (cookie >> 24) & 0x7, cookie & _MAC_MASK
            for t in range(count, count - MAX_AGE_PERIODS, -1):
                # Only the candidate with matching low bits can have made it.
                if t & 0x1F == t5:
                    if hmac.compare_digest(self._mac(tup, client_isn, t, idx).to_bytes(3, "big"),
                                           mac.to_bytes(3, "big")):
                        return MSS_TABLE[idx]
                    break
        self.rejected += 1
        return None


def encode_ts_options(tsval: int, wscale: int | None, sack_permitted: bool) -> int:
    """A SYN-ACK TSval whose low 6 bits carry the client's window scale and SACK.

    The result is never after ``tsval`` so our timestamp clock does not jump ahead.
    """
    if not isinstance(tsval, int) or not 0 <= tsval <= seq.MASK:
        raise ValueError(f"TSval must be a 32-bit unsigned int, got {tsval!r}")
    if wscale is None:
        opts = _WSCALE_NONE
    elif isinstance(wscale, int) and 0 <= wscale <= MAX_WSCALE:
        opts = wscale
    else:
        raise ValueError(f"window scale must be 0..{MAX_WSCALE} or None, got {wscale!r}")
    if sack_permitted:
        opts |= _SACK_BIT
    value = (tsval & ~TS_OPT_MASK & seq.MASK) | opts
    if seq.gt(value, tsval):
        value = seq.add(value, -(1 << TS_OPT_BITS))
    return value


def decode_ts_options(tsecr: int) -> tuple[int | None, bool] | None:
    """(window scale or None, SACK-permitted) from an echoed TSecr, or None if the
    bits cannot have come from :func:`encode_ts_options`."""
    if not isinstance(tsecr, int) or not 0 <= tsecr <= seq.MASK:
        return None
    opts = tsecr & TS_OPT_MASK
    if opts & ~(_SACK_BIT | 0xF):
        return None
    ws = opts & 0xF
    if ws != _WSCALE_NONE and ws > MAX_WSCALE:
        return None
    return (None if ws == _WSCALE_NONE else ws), bool(opts & _SACK_BIT)
