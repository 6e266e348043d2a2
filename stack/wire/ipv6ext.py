"""The IPv6 extension-header chain (RFC 8200 §4): hop-by-hop and destination
options, routing and fragment headers, walked with bounds.

:func:`walk` reads the chain that follows a fixed header and says where the
upper-layer header starts. Malformed chains raise :class:`WireError`; what RFC 8200
answers with an ICMPv6 Parameter Problem raises :class:`ParameterProblem` (a
WireError), which carries the code, the pointer into the packet and whether the
answer may be sent. Options are acted on by the two high bits of their type
(RFC 8200 §4.2): skip, discard, discard and answer, discard and answer unless the
destination is multicast.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.errors import BytesLike, WireError
from stack.wire.ipv6 import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_HLEN,
)

# Parameter Problem codes (RFC 4443 §3.4, RFC 7112 §3).
PP_ERRONEOUS_FIELD = 0
PP_UNRECOGNIZED_NEXT_HEADER = 1
PP_UNRECOGNIZED_OPTION = 2
PP_INCOMPLETE_CHAIN = 3

OPT_PAD1 = 0
OPT_PADN = 1

#: Extension headers per packet, and their bytes in total, that :func:`walk` accepts
#: (RFC 8504 §5.3 lets a host bound both; a real chain is one or two headers).
MAX_HEADERS = 8
MAX_CHAIN_BYTES = 1024
#: Options per options header (RFC 8504 §5.3 again: padding counts as options).
MAX_OPTIONS = 16
FRAGMENT_HLEN = 8

#: The least of each upper-layer header a first fragment must hold (RFC 7112 §5).
_UPPER_MIN = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_ICMPV6: 4}
_OPTION_HEADERS = frozenset({IPPROTO_HOPOPTS, IPPROTO_DSTOPTS})
_FRAG = struct.Struct("!BBHI")


class ParameterProblem(WireError):
    """A packet RFC 8200 discards with an ICMPv6 Parameter Problem (RFC 4443 §3.4).

    ``pointer`` is the offset in the packet (from the IPv6 header) of the byte at
    fault; ``answer`` is False when the rules forbid the answer (an option of action
    11 in a packet to a multicast address, or of action 01).
    """

    def __init__(self, reason: str, code: int, pointer: int, answer: bool = True) -> None:
        super().__init__(reason, f"code {code} pointer {pointer}")
        self.code = code
        self.pointer = pointer
        self.answer = answer

    def __reduce__(self) -> tuple[type, tuple[str, int, int, bool]]:
        """Pickle with the code, pointer and answer flag (WireError's args lack them)."""
        return (type(self), (self.reason, self.code, self.pointer, self.answer))


@dataclass(slots=True)
class FragmentHeader:
    """The Fragment header (RFC 8200 §4.5). ``offset`` is in bytes (a multiple of 8)."""

    next_header: int
    offset: int
    more: bool
    identification: int

    @property
    def atomic(self) -> bool:
        """A whole packet in one fragment (RFC 6946): processed as if unfragmented."""
        return self.offset == 0 and not self.more

    @classmethod
    def parse(cls, buf: BytesLike) -> FragmentHeader:
        """Decode 8 bytes (reason "ipv6_ext_truncated")."""
        if len(buf) < FRAGMENT_HLEN:
            raise WireError("ipv6_ext_truncated", "fragment header")
        nxt, _res, off_m, ident = _FRAG.unpack_from(buf, 0)
        return cls(nxt, off_m & 0xFFF8, bool(off_m & 1), ident)

    def to_bytes(self) -> bytes:
        """The 8-byte header (reserved fields zero)."""
        if self.offset & 7 or not 0 <= self.offset <= 0xFFF8:
            raise WireError("ipv6_bad_field", f"fragment offset {self.offset}")
        try:
            return _FRAG.pack(self.next_header, 0, self.offset | int(self.more),
                              self.identification)
        except struct.error as e:
            raise WireError("ipv6_bad_field", str(e)) from None


@dataclass(slots=True)
class HeaderChain:
    """What :func:`walk` found.

    ``upper_layer`` is the Next Header value after the last header walked and
    ``offset`` where that starts (from the IPv6 header); ``nh_pointer`` is the offset
    of the Next Header field holding it (a Parameter Problem code 1 points there).
    A fragment header with a nonzero offset ends the walk: the rest is fragment
    data. ``fragment_at`` is where the fragment header starts and
    ``fragment_nh_pointer`` the Next Header field that names it (-1 without one).
    """

    upper_layer: int
    offset: int
    nh_pointer: int
    fragment: FragmentHeader | None = None
    fragment_at: int = -1
    fragment_nh_pointer: int = -1


def option_action(opt_type: int) -> int:
    """The two high bits of an option type: what to do when it is not recognised."""
    return opt_type >> 6


def walk_options(packet: BytesLike, start: int, end: int, dst_multicast: bool,
                 known: frozenset[int] = frozenset()) -> list[tuple[int, int, int]]:
    """Walk the options in ``packet[start:end]`` (an options header's body) and
    return the recognised ones as (type, offset of the data, data length).

    Pad1 and PadN are skipped. An option not in ``known`` is skipped (action 00),
    or discards the packet (01), or raises ParameterProblem code 2 pointing at its
    type byte (10; 11 only when the destination is not multicast).
    """
    found: list[tuple[int, int, int]] = []
    i = start
    count = 0
    while i < end:
        count += 1
        if count > MAX_OPTIONS:
            raise WireError("ipv6_ext_too_many_options", f"over {MAX_OPTIONS}")
        typ = packet[i]
        if typ == OPT_PAD1:
            i += 1
            continue
        if i + 2 > end or i + 2 + packet[i + 1] > end:
            raise WireError("ipv6_ext_bad_option", f"option {typ} at {i} overruns")
        length = packet[i + 1]
        if typ != OPT_PADN:
            if typ in known:
                found.append((typ, i + 2, length))
            else:
                _unknown_option(typ, i, dst_multicast)
        i += 2 + length
    return found


def _unknown_option(typ: int, pointer: int, dst_multicast: bool) -> None:
    action = option_action(typ)
    if action == 0:
        return
    answer = action == 2 or (action == 3 and not dst_multicast)
    raise ParameterProblem("ipv6_unknown_option", PP_UNRECOGNIZED_OPTION, pointer,
                           answer)


def walk(packet: BytesLike, *, known_options: frozenset[int] = frozenset(),
         max_headers: int = MAX_HEADERS, max_bytes: int = MAX_CHAIN_BYTES) -> HeaderChain:
    """Walk the extension headers of the IPv6 packet ``packet`` (fixed header
    included, cut to its payload length).

    Reasons: "ipv6_ext_truncated", "ipv6_ext_chain_too_long" (more than
    ``max_headers`` headers or ``max_bytes`` bytes), "ipv6_ext_bad_option",
    "ipv6_ext_too_many_options", "ipv6_frag_nested" (a second fragment header);
    ParameterProblem "ipv6_hbh_not_first" (code 1, RFC 8200 §4.3), "ipv6_unknown_option"
    (code 2), "ipv6_routing_unsupported" (code 0: no routing type is implemented, so
    a header with segments left is refused, RFC 8200 §4.4), "ipv6_frag_incomplete_chain"
    (code 3: a first fragment without the whole chain, RFC 7112 §5).
    """
    n = len(packet)
    if n < IPV6_HLEN:
        raise WireError("ipv6_truncated", f"{n} bytes")
    multicast = packet[24] == 0xFF
    nxt, nh_ptr, i = packet[6], 6, IPV6_HLEN
    chain = HeaderChain(nxt, i, nh_ptr)
    headers = 0
    while nxt in _OPTION_HEADERS or nxt in (IPPROTO_ROUTING, IPPROTO_FRAGMENT):
        headers += 1
        if headers > max_headers or i - IPV6_HLEN > max_bytes:
            raise WireError("ipv6_ext_chain_too_long", f"{headers} headers, {i} bytes")
        if nxt == IPPROTO_HOPOPTS and i != IPV6_HLEN:
            raise ParameterProblem("ipv6_hbh_not_first", PP_UNRECOGNIZED_NEXT_HEADER,
                                   nh_ptr)
        if nxt == IPPROTO_FRAGMENT:
            if chain.fragment is not None:
                raise WireError("ipv6_frag_nested", f"at {i}")
            frag = FragmentHeader.parse(memoryview(packet)[i:])
            chain.fragment, chain.fragment_at, chain.fragment_nh_pointer = frag, i, nh_ptr
            nxt, nh_ptr, i = frag.next_header, i, i + FRAGMENT_HLEN
            if frag.offset:
                break  # the rest is fragment data, not headers
            continue
        hlen = _ext_len(packet, i, n, chain)
        if nxt == IPPROTO_ROUTING:
            if packet[i + 3]:  # segments left
                raise ParameterProblem("ipv6_routing_unsupported", PP_ERRONEOUS_FIELD, i + 2)
        else:
            walk_options(packet, i + 2, i + hlen, multicast, known_options)
        nxt, nh_ptr, i = packet[i], i, i + hlen
    if i - IPV6_HLEN > max_bytes:
        raise WireError("ipv6_ext_chain_too_long", f"{i} bytes")
    chain.upper_layer, chain.offset, chain.nh_pointer = nxt, i, nh_ptr
    if chain.fragment is not None and chain.fragment.more and not chain.fragment.offset:
        _check_first_fragment(nxt, i, n)
    return chain


def _ext_len(packet: BytesLike, i: int, n: int, chain: HeaderChain) -> int:
    """The length of the routing or options header at ``i`` (Hdr Ext Len in 8-byte
    units, not counting the first 8)."""
    if i + 2 > n or i + 8 * (packet[i + 1] + 1) > n:
        if chain.fragment is not None and chain.fragment.more:
            raise ParameterProblem("ipv6_frag_incomplete_chain", PP_INCOMPLETE_CHAIN, 0)
        raise WireError("ipv6_ext_truncated", f"header at {i}")
    return 8 * (packet[i + 1] + 1)


def _check_first_fragment(upper: int, at: int, n: int) -> None:
    """RFC 7112 §5: a first fragment carries the whole chain, the upper-layer header
    included."""
    if at + _UPPER_MIN.get(upper, 0) > n:
        raise ParameterProblem("ipv6_frag_incomplete_chain", PP_INCOMPLETE_CHAIN, 0)


def options_header(next_header: int, options: bytes = b"") -> bytes:
    """A hop-by-hop or destination options header holding ``options`` (encoded TLVs),
    padded with Pad1/PadN to a multiple of 8 bytes (RFC 8200 §4.2)."""
    body = bytearray((next_header, 0)) + options
    pad = -len(body) % 8
    if pad == 1:
        body.append(OPT_PAD1)
    elif pad:
        body += bytes((OPT_PADN, pad - 2)) + bytes(pad - 2)
    if len(body) > 8 * 256:
        raise WireError("ipv6_bad_field", "options header too long")
    body[1] = len(body) // 8 - 1
    return bytes(body)


def routing_header(next_header: int, routing_type: int, segments_left: int,
                   data: bytes = b"") -> bytes:
    """A routing header (RFC 8200 §4.4) with ``data`` after its first 4 bytes,
    zero-padded to a multiple of 8."""
    body = bytearray((next_header, 0, routing_type, segments_left)) + data
    body += bytes(-len(body) % 8)
    if len(body) > 8 * 256:
        raise WireError("ipv6_bad_field", "routing header too long")
    body[1] = len(body) // 8 - 1
    return bytes(body)


def skip(packet: BytesLike, max_headers: int = MAX_HEADERS) -> tuple[int, int] | None:
    """(upper-layer Next Header, its offset) of ``packet``, skipping extension
    headers by their lengths without acting on their contents; None when the chain
    is cut short, too long, or continues into a later fragment.

    For deciding about a packet :func:`walk` refused (may an ICMPv6 error be sent
    about it? RFC 4443 §2.4 (e) asks whether it is itself an error).
    """
    n = len(packet)
    if n < IPV6_HLEN:
        return None
    nxt, i = packet[6], IPV6_HLEN
    for _ in range(max_headers + 1):
        if nxt == IPPROTO_FRAGMENT:
            if i + FRAGMENT_HLEN > n or packet[i + 2] << 8 & 0xFF00 | packet[i + 3] & 0xF8:
                return None
            nxt, i = packet[i], i + FRAGMENT_HLEN
        elif nxt in _OPTION_HEADERS or nxt == IPPROTO_ROUTING:
            if i + 2 > n:
                return None
            nxt, i = packet[i], i + 8 * (packet[i + 1] + 1)
        else:
            return (nxt, i) if i <= n else None
    return None
