"""Initial sequence numbers per RFC 6528 §3: ISN = M + F(4-tuple, secretkey).

M is a timer that ticks every 4 microseconds; F is a keyed hash (BLAKE2s with
the secret as its key) of the connection identifiers, truncated to 32 bits, so
that ISNs of one 4-tuple follow the clock while other tuples' ISNs cannot be
predicted from it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct

from stack import seq

#: RFC 6528 §3: M ticks every 4 microseconds.
TICKS_PER_SECOND = 250_000
_BLAKE2S_KEY_MAX = 32


def _check_endpoint(addr: bytes, port: int) -> None:
    if not isinstance(addr, (bytes, bytearray)) or len(addr) not in (4, 16):
        raise ValueError(f"address must be 4 or 16 bytes, got {addr!r}")
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port!r}")


def tuple_bytes(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """An unambiguous encoding of a connection 4-tuple (lengths are implied by a tag)."""
    _check_endpoint(src, sport)
    _check_endpoint(dst, dport)
    return struct.pack("!BBHH", len(src), len(dst), sport, dport) + bytes(src) + bytes(dst)


def prepare_key(secret: bytes) -> bytes:
    """A BLAKE2s key from an arbitrary secret (longer secrets are hashed down)."""
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ValueError("secret must be non-empty bytes")
    if len(secret) > _BLAKE2S_KEY_MAX:
        return hashlib.blake2s(bytes(secret)).digest()
    return bytes(secret)


class IsnGenerator:
    """RFC 6528 ISN generator. Without a secret, a random 32-byte one is drawn once."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = prepare_key(secrets.token_bytes(32) if secret is None else secret)

    def offset(self, src: bytes, sport: int, dst: bytes, dport: int) -> int:
        """F(localip, localport, remoteip, remoteport, secretkey): 32 bits."""
        digest = hashlib.blake2s(tuple_bytes(src, sport, dst, dport), key=self._key).digest()
        return int.from_bytes(digest[:4], "big")

    def isn(self, src: bytes, sport: int, dst: bytes, dport: int, now: float) -> int:
        """The ISN for a connection from (src, sport) to (dst, dport) at time ``now``."""
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        m = int(now * TICKS_PER_SECOND) & seq.MASK
        return seq.add(m, self.offset(src, sport, dst, dport))
