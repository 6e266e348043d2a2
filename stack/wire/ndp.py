"""Neighbor Discovery messages and options (RFC 4861 §4), with their validity checks.

Each ``parse_*`` function takes an ICMPv6 message whose checksum was checked and the
IPv6 source, destination and hop limit it came with, and applies the receiver's
validation of RFC 4861 §6.1 and §7.1: a message that fails is refused with a
:class:`WireError` whose reason names the check. Link-layer address options are
Ethernet's (RFC 2464 §6: 6 bytes in an 8-byte option).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from stack.wire.errors import BytesLike, WireError
from stack.wire.icmp6 import (
    NEIGHBOR_ADVERTISEMENT,
    NEIGHBOR_SOLICITATION,
    ROUTER_ADVERTISEMENT,
    ROUTER_SOLICITATION,
    Icmp6Message,
)
from stack.wire.ipv6 import is_link_local, is_multicast, is_solicited_node, is_unspecified

OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_PREFIX_INFORMATION = 3
OPT_REDIRECTED_HEADER = 4
OPT_MTU = 5

#: RFC 4861 §6.1, §7.1: every NDP message is sent with hop limit 255, so one that
#: arrives with less came through a router, from off the link.
NDP_HOP_LIMIT = 255
#: Neighbor Advertisement flags (RFC 4861 §4.4), in the 32-bit word after the checksum.
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
#: Router Advertisement flags (RFC 4861 §4.2): managed, other configuration.
RA_MANAGED = 0x80
RA_OTHER = 0x40
#: Prefix Information flags (RFC 4861 §4.6.2): on-link, autonomous (RFC 4862).
PI_ON_LINK = 0x80
PI_AUTONOMOUS = 0x40
#: A lifetime of all ones means infinity (RFC 4861 §4.6.2).
INFINITY = 0xFFFFFFFF

_PREFIX_INFO = struct.Struct("!BBBBII4x16s")
_MTU_OPT = struct.Struct("!BBHI")
_RA_TAIL = struct.Struct("!II")
#: Bytes of the message after the ICMPv6 header that come before the options.
_TARGET_LEN = 16


@dataclass(slots=True)
class PrefixInformation:
    """A Prefix Information option (RFC 4861 §4.6.2); lifetimes in seconds."""

    prefix: bytes
    prefix_length: int
    on_link: bool = True
    autonomous: bool = True
    valid_lifetime: int = INFINITY
    preferred_lifetime: int = INFINITY

    def to_bytes(self) -> bytes:
        """The 32-byte option."""
        flags = (PI_ON_LINK if self.on_link else 0) | (PI_AUTONOMOUS if self.autonomous else 0)
        try:
            return _PREFIX_INFO.pack(OPT_PREFIX_INFORMATION, 4, self.prefix_length, flags,
                                     self.valid_lifetime, self.preferred_lifetime, self.prefix)
        except struct.error as e:
            raise WireError("ndp_bad_field", str(e)) from None


@dataclass(slots=True)
class NdpOptions:
    """The options of one NDP message that this stack reads; others are skipped
    (RFC 4861 §4.6: unknown options are ignored, not refused)."""

    source_lladdr: bytes | None = None
    target_lladdr: bytes | None = None
    prefixes: tuple[PrefixInformation, ...] = ()
    mtu: int | None = None

    @classmethod
    def parse(cls, buf: BytesLike) -> NdpOptions:
        """Decode options. Reasons: "ndp_bad_option" (a length of 0, one past the end,
        or the wrong length for its type), "ndp_duplicate_option"."""
        out = cls()
        prefixes: list[PrefixInformation] = []
        i, n = 0, len(buf)
        while i < n:
            if i + 2 > n or buf[i + 1] == 0 or i + 8 * buf[i + 1] > n:
                # RFC 4861 §4.6: a length of 0 must make the receiver drop the packet.
                raise WireError("ndp_bad_option", f"option at {i}")
            typ, size = buf[i], 8 * buf[i + 1]
            _parse_one(out, prefixes, typ, memoryview(buf)[i:i + size])
            i += size
        out.prefixes = tuple(prefixes)
        return out

    def to_bytes(self) -> bytes:
        """The options in the order: link-layer addresses, MTU, prefixes."""
        out = bytearray()
        for typ, mac in ((OPT_SOURCE_LLADDR, self.source_lladdr),
                         (OPT_TARGET_LLADDR, self.target_lladdr)):
            if mac is not None:
                if len(mac) != 6:
                    raise WireError("ndp_bad_field", "link-layer address must be 6 bytes")
                out += bytes((typ, 1)) + mac
        if self.mtu is not None:
            try:
                out += _MTU_OPT.pack(OPT_MTU, 1, 0, self.mtu)
            except struct.error as e:
                raise WireError("ndp_bad_field", str(e)) from None
        for p in self.prefixes:
            out += p.to_bytes()
        return bytes(out)


def _parse_one(out: NdpOptions, prefixes: list[PrefixInformation], typ: int,
               opt: memoryview) -> None:
    if typ in (OPT_SOURCE_LLADDR, OPT_TARGET_LLADDR):
        if len(opt) != 8:
            raise WireError("ndp_bad_option", f"link-layer address option of {len(opt)}")
        mac = bytes(opt[2:8])
        if typ == OPT_SOURCE_LLADDR:
            if out.source_lladdr is not None:
                raise WireError("ndp_duplicate_option", "source link-layer address")
            out.source_lladdr = mac
        else:
            if out.target_lladdr is not None:
                raise WireError("ndp_duplicate_option", "target link-layer address")
            out.target_lladdr = mac
    elif typ == OPT_PREFIX_INFORMATION:
        if len(opt) != _PREFIX_INFO.size:
            raise WireError("ndp_bad_option", f"prefix information of {len(opt)}")
        _t, _l, plen, flags, valid, preferred, prefix = _PREFIX_INFO.unpack(opt)
        if plen > 128:
            raise WireError("ndp_bad_option", f"prefix length {plen}")
        prefixes.append(PrefixInformation(prefix, plen, bool(flags & PI_ON_LINK),
                                          bool(flags & PI_AUTONOMOUS), valid, preferred))
    elif typ == OPT_MTU:
        if len(opt) != _MTU_OPT.size:
            raise WireError("ndp_bad_option", f"MTU option of {len(opt)}")
        if out.mtu is not None:
            raise WireError("ndp_duplicate_option", "MTU")
        out.mtu = _MTU_OPT.unpack(opt)[3]


@dataclass(slots=True)
class NeighborSolicitation:
    """RFC 4861 §4.3."""

    target: bytes
    options: NdpOptions = field(default_factory=NdpOptions)

    def to_message(self) -> Icmp6Message:
        """The ICMPv6 message (its checksum is computed by ``to_bytes(src, dst)``)."""
        return Icmp6Message(NEIGHBOR_SOLICITATION, 0, 0, self.target + self.options.to_bytes())


@dataclass(slots=True)
class NeighborAdvertisement:
    """RFC 4861 §4.4."""

    target: bytes
    router: bool = False
    solicited: bool = False
    override: bool = False
    options: NdpOptions = field(default_factory=NdpOptions)

    def to_message(self) -> Icmp6Message:
        """The ICMPv6 message."""
        flags = ((NA_ROUTER if self.router else 0) | (NA_SOLICITED if self.solicited else 0)
                 | (NA_OVERRIDE if self.override else 0))
        return Icmp6Message(NEIGHBOR_ADVERTISEMENT, 0, flags,
                            self.target + self.options.to_bytes())


@dataclass(slots=True)
class RouterSolicitation:
    """RFC 4861 §4.1."""

    options: NdpOptions = field(default_factory=NdpOptions)

    def to_message(self) -> Icmp6Message:
        """The ICMPv6 message."""
        return Icmp6Message(ROUTER_SOLICITATION, 0, 0, self.options.to_bytes())


@dataclass(slots=True)
class RouterAdvertisement:
    """RFC 4861 §4.2; ``router_lifetime`` in seconds, the two timers in milliseconds
    (0: unspecified by this router)."""

    cur_hop_limit: int = 0
    managed: bool = False
    other: bool = False
    router_lifetime: int = 0
    reachable_time: int = 0
    retrans_timer: int = 0
    options: NdpOptions = field(default_factory=NdpOptions)

    def to_message(self) -> Icmp6Message:
        """The ICMPv6 message."""
        flags = (RA_MANAGED if self.managed else 0) | (RA_OTHER if self.other else 0)
        if not (0 <= self.cur_hop_limit <= 255 and 0 <= self.router_lifetime <= 0xFFFF):
            raise WireError("ndp_bad_field", "hop limit or router lifetime out of range")
        rest = self.cur_hop_limit << 24 | flags << 16 | self.router_lifetime
        try:
            tail = _RA_TAIL.pack(self.reachable_time, self.retrans_timer)
        except struct.error as e:
            raise WireError("ndp_bad_field", str(e)) from None
        return Icmp6Message(ROUTER_ADVERTISEMENT, 0, rest, tail + self.options.to_bytes())


def _common(msg: Icmp6Message, hop_limit: int, min_body: int) -> None:
    """The checks every NDP message shares: hop limit 255, code 0, length."""
    if hop_limit != NDP_HOP_LIMIT:
        raise WireError("ndp_bad_hop_limit", str(hop_limit))
    if msg.code != 0:
        raise WireError("ndp_bad_code", str(msg.code))
    if len(msg.payload) < min_body:
        raise WireError("ndp_truncated", f"{len(msg.payload) + 8} bytes")


def _check_lladdr(lladdr: bytes | None, eth_src: bytes | None) -> None:
    """A link-layer address option must name the frame's own sender: an NDP message
    speaking for another station is a spoof on a link without proxies (RFC 4389
    proxies are not supported), and RFC 3756 §4.1.1 names it the first threat."""
    if lladdr is not None and eth_src is not None and lladdr != eth_src:
        raise WireError("ndp_lladdr_mismatch")


def parse_ns(msg: Icmp6Message, src: bytes, dst: bytes, hop_limit: int,
             eth_src: bytes | None = None) -> NeighborSolicitation:
    """Validate and decode a Neighbor Solicitation (RFC 4861 §7.1.1). Reasons beyond
    the options': "ndp_bad_hop_limit", "ndp_bad_code", "ndp_truncated",
    "ndp_multicast_target", "ndp_dad_bad_destination" and "ndp_dad_with_lladdr" (from
    the unspecified address only to a solicited-node address and without a source
    link-layer address), "ndp_lladdr_mismatch" (given ``eth_src``, the frame's
    sender, the source link-layer address must be it)."""
    _common(msg, hop_limit, _TARGET_LEN)
    body = msg.payload
    target = bytes(body[:_TARGET_LEN])
    if is_multicast(target):
        raise WireError("ndp_multicast_target")
    opts = NdpOptions.parse(body[_TARGET_LEN:])
    if is_unspecified(src):
        if not is_solicited_node(dst):
            raise WireError("ndp_dad_bad_destination")
        if opts.source_lladdr is not None:
            raise WireError("ndp_dad_with_lladdr")
    _check_lladdr(opts.source_lladdr, eth_src)
    return NeighborSolicitation(target, opts)


def parse_na(msg: Icmp6Message, dst: bytes, hop_limit: int,
             eth_src: bytes | None = None) -> NeighborAdvertisement:
    """Validate and decode a Neighbor Advertisement (RFC 4861 §7.1.2): as for an NS
    (the target link-layer address is the one checked against ``eth_src``), and
    "ndp_solicited_to_multicast" (the Solicited flag on a multicast one)."""
    _common(msg, hop_limit, _TARGET_LEN)
    target = bytes(msg.payload[:_TARGET_LEN])
    if is_multicast(target):
        raise WireError("ndp_multicast_target")
    if is_multicast(dst) and msg.rest & NA_SOLICITED:
        raise WireError("ndp_solicited_to_multicast")
    opts = NdpOptions.parse(msg.payload[_TARGET_LEN:])
    _check_lladdr(opts.target_lladdr, eth_src)
    return NeighborAdvertisement(target, bool(msg.rest & NA_ROUTER),
                                 bool(msg.rest & NA_SOLICITED), bool(msg.rest & NA_OVERRIDE),
                                 opts)


def parse_rs(msg: Icmp6Message, src: bytes, hop_limit: int) -> RouterSolicitation:
    """Validate and decode a Router Solicitation (RFC 4861 §6.1.1):
    "ndp_dad_with_lladdr" names a source link-layer address from ``::``."""
    _common(msg, hop_limit, 0)
    opts = NdpOptions.parse(msg.payload)
    if is_unspecified(src) and opts.source_lladdr is not None:
        raise WireError("ndp_dad_with_lladdr")
    return RouterSolicitation(opts)


def parse_ra(msg: Icmp6Message, src: bytes, hop_limit: int,
             eth_src: bytes | None = None) -> RouterAdvertisement:
    """Validate and decode a Router Advertisement (RFC 4861 §6.1.2):
    "ndp_ra_not_link_local" when its source is not a link-local address (routers are
    known by their link-local addresses, and only on-link ones have one);
    "ndp_lladdr_mismatch" as for an NS."""
    _common(msg, hop_limit, _RA_TAIL.size)
    if not is_link_local(src):
        raise WireError("ndp_ra_not_link_local")
    reachable, retrans = _RA_TAIL.unpack_from(msg.payload, 0)
    opts = NdpOptions.parse(msg.payload[_RA_TAIL.size:])
    _check_lladdr(opts.source_lladdr, eth_src)
    r = msg.rest
    return RouterAdvertisement(r >> 24, bool(r >> 16 & RA_MANAGED), bool(r >> 16 & RA_OTHER),
                               r & 0xFFFF, reachable, retrans, opts)
