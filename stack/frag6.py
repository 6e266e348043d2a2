"""IPv6 reassembly for the stack's own packets (RFC 8200 §4.5), bounded like IPv4's.

The buffers, bounds and overlap rule are stack/frag.py's :class:`Reassembler`
(its own instance, with IPv6's 60-second timeout): overlapping fragments drop the
whole packet (RFC 5722), an exact duplicate only itself. What is IPv6's is here:
the key is (source, destination, identification); a fragment whose length is not a
multiple of 8 while more follow, or that ends past 65,535 bytes, is answered with a
Parameter Problem (RFC 8200 §4.5); the unfragmentable part is the first fragment's
(the Next Header values of later ones are ignored), with the Next Header that named
the fragment header rewritten to the fragment header's own. A first fragment
without the whole header chain never gets here (stack/wire/ipv6ext.py refuses it,
RFC 7112), and an atomic fragment (RFC 6946) is no fragment: the caller delivers it.

:func:`fragment` splits a packet the stack sends that is larger than the link's MTU
(RFC 8200 §5: only the source fragments IPv6).
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.frag import Reassembler
from stack.wire.icmp6 import ERROR_MAX_QUOTE
from stack.wire.ipv6 import IPPROTO_FRAGMENT, IPV6_HLEN, IPV6_MIN_MTU
from stack.wire.ipv6ext import FRAGMENT_HLEN, PP_ERRONEOUS_FIELD, FragmentHeader, HeaderChain

#: RFC 8200 §4.5: reassembly gives up 60 seconds after the first fragment came.
REASSEMBLY_TIMEOUT = 60.0
_PLEN_FIELD = 4
_MAX_PAYLOAD = 0xFFFF


@dataclass(slots=True)
class FragmentError:
    """A fragment RFC 8200 §4.5 refuses with a Parameter Problem code 0 at
    ``pointer`` (into the fragment as received)."""

    reason: str
    pointer: int
    code: int = PP_ERRONEOUS_FIELD


class Reassembler6:
    """Reassembly buffers for IPv6 fragments addressed to the stack."""

    def __init__(self, *, max_datagrams: int = 64, max_bytes: int = 1 << 20,
                 timeout: float = REASSEMBLY_TIMEOUT) -> None:
        # The stored header is the first fragment's up to its fragment header's end:
        # that and the fixed header are outside the 65,535-byte payload limit.
        self.buffers = Reassembler(max_datagrams=max_datagrams, max_bytes=max_bytes,
                                   timeout=timeout, header_allowance=IPV6_HLEN + FRAGMENT_HLEN,
                                   quote=ERROR_MAX_QUOTE)

    def __len__(self) -> int:
        return len(self.buffers)

    @property
    def held(self) -> int:
        """Fragment bytes held."""
        return self.buffers.bytes

    def add(self, packet: bytes, chain: HeaderChain,
            now: float) -> tuple[bytes | None, str | FragmentError | None]:
        """Take one fragment: ``packet`` is the whole IPv6 packet (cut to its payload
        length) and ``chain`` its walk, which found a fragment header that is not
        atomic. Returns (the reassembled packet if now complete, why it was dropped:
        a counter name, or a FragmentError to answer)."""
        frag = chain.fragment
        assert frag is not None and not frag.atomic
        data_at = chain.fragment_at + FRAGMENT_HLEN
        length = len(packet) - data_at
        if frag.more and length % 8:
            return None, FragmentError("frag6_bad_length", _PLEN_FIELD)
        if frag.offset + length > _MAX_PAYLOAD:
            return None, FragmentError("frag6_too_long", chain.fragment_at + 2)
        if length == 0 and frag.more:
            return None, "frag6_empty"
        key = (packet[8:24], packet[24:40], IPPROTO_FRAGMENT, frag.identification)
        whole, reason = self.buffers.add(key, packet[:data_at], frag.offset, frag.more,
                                         packet[data_at:], now)
        if reason is not None:
            return None, "frag6_" + reason.removeprefix("frag_")
        if whole is None:
            return None, None
        out = _rebuild(whole.header, whole.payload)
        if out is None:
            return None, "frag6_too_long"
        return out, None

    def next_deadline(self) -> float | None:
        """When the oldest packet in progress times out."""
        return self.buffers.next_deadline()

    def expire(self, now: float) -> list[bytes]:
        """Drop timed-out packets; return the first fragments (quoted as far as an
        ICMPv6 error may) of those whose first fragment came, for Time Exceeded
        code 1 (RFC 8200 §4.5)."""
        return self.buffers.expire(now)


def _rebuild(first: bytes, payload: bytes) -> bytes | None:
    """The reassembled packet: the first fragment's unfragmentable part, the Next
    Header that named the fragment header set to the fragment header's, the payload
    length recomputed (None if it would pass 65,535)."""
    frag_at = len(first) - FRAGMENT_HLEN
    out = bytearray(first[:frag_at])
    out[_nh_pointer(first, frag_at)] = first[frag_at]
    total = frag_at - IPV6_HLEN + len(payload)
    if total > _MAX_PAYLOAD:
        return None
    out[_PLEN_FIELD:_PLEN_FIELD + 2] = total.to_bytes(2, "big")
    return bytes(out + payload)


def _nh_pointer(headers: bytes, frag_at: int) -> int:
    """Offset of the Next Header field that names the header at ``frag_at`` in a
    chain the wire layer has already walked (each header's length is sound)."""
    ptr, off = 6, IPV6_HLEN
    while off < frag_at:
        ptr = off
        off += 8 * (headers[off + 1] + 1)
    return ptr


def fragment(packet: bytes, mtu: int, identification: int) -> list[bytes]:
    """Split ``packet`` (an IPv6 packet with no extension headers, as the stack sends
    them) into fragments of at most ``mtu`` bytes (RFC 8200 §4.5): each carries the
    fixed header and a fragment header, and every fragment's data but the last's is a
    multiple of 8 bytes. Raises ValueError when the MTU is under IPv6's 1280."""
    if mtu < IPV6_MIN_MTU:
        raise ValueError(f"MTU {mtu} is under IPv6's minimum")
    header, body = bytearray(packet[:IPV6_HLEN]), packet[IPV6_HLEN:]
    next_header = header[6]
    header[6] = IPPROTO_FRAGMENT
    room = (mtu - IPV6_HLEN - FRAGMENT_HLEN) & ~7
    out = []
    for off in range(0, len(body), room):
        chunk = body[off:off + room]
        more = off + room < len(body)
        header[_PLEN_FIELD:_PLEN_FIELD + 2] = (FRAGMENT_HLEN + len(chunk)).to_bytes(2, "big")
        frag = FragmentHeader(next_header, off, more, identification).to_bytes()
        out.append(bytes(header) + frag + chunk)
    return out
