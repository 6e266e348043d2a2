"""Where each header field sits: byte offsets and fixed-layout structs.

Code that reads or rewrites headers in place (the flow table, the splice relay,
software segmentation) names fields through these constants instead of writing
literal offsets: ``buf[t + TCP_FLAGS]``, ``U32.unpack_from(buf, t + TCP_SEQ)``.
They are plain module-level integers and precompiled :class:`struct.Struct`
objects, so using them costs nothing at run time; the few accessors below are
meant for paths that are not per frame (a call is dearer than the arithmetic).

Offsets are relative to the start of their own header (RFC 894 for Ethernet,
RFC 791 §3.1 for IPv4, RFC 9293 §3.1 for TCP, RFC 768 for UDP); the ``FRAME_``
ones are relative to the start of an Ethernet frame whose IPv4 header has no
options, the shape the fast paths accept.
"""

from __future__ import annotations

import struct

from stack.wire.errors import BytesLike

# -- Ethernet II ----------------------------------------------------------------------
ETH_DST = 0
ETH_SRC = 6
ETH_TYPE = 12
ETH_HLEN = 14

# -- IPv4 -----------------------------------------------------------------------------
IP_VIHL = 0
IP_TOS = 1
IP_TOTLEN = 2
IP_IDENT = 4
IP_FRAG = 6
IP_TTL = 8
IP_PROTO = 9
IP_CSUM = 10
IP_SRC = 12
IP_DST = 16
#: End of the fixed header (and of the destination address).
IP_MIN_HLEN = 20
#: The version/IHL byte of a header without options.
IP_VIHL_NO_OPTIONS = 0x45
#: Mask of the flags/fragment word that marks a fragment: MF or an offset (DF excluded).
IP_FRAG_MF_OFFSET = 0x3FFF
#: Mask of the flags/fragment word's fragment offset (in 8-byte units).
IP_FRAG_OFFSET_MASK = 0x1FFF
IP_FLAG_DF = 0x4000
IP_FLAG_MF = 0x2000

# -- IPv6 (RFC 8200 §3) -----------------------------------------------------------------
#: Version (4 bits), traffic class (8) and flow label (20).
IP6_VTF = 0
IP6_PLEN = 4
IP6_NXT = 6
IP6_HLIM = 7
IP6_SRC = 8
IP6_DST = 24
#: The fixed header's length (and end of the destination address).
IP6_HLEN = 40

# -- TCP ------------------------------------------------------------------------------
TCP_SPORT = 0
TCP_DPORT = 2
TCP_SEQ = 4
TCP_ACK = 8
#: Data offset (high nibble, in 32-bit words) and reserved bits.
TCP_DOFF = 12
TCP_FLAGS = 13
TCP_WIN = 14
#: RFC 9293's name for TCP_WIN.
TCP_WINDOW = TCP_WIN
TCP_CSUM = 16
TCP_URP = 18
#: First option byte (and end of the fixed header).
TCP_OPTIONS = 20
TCP_MIN_HLEN = 20

# -- UDP ------------------------------------------------------------------------------
UDP_LEN = 4
UDP_CSUM = 6

# -- a frame with a 20-byte IPv4 header -----------------------------------------------
FRAME_IP = ETH_HLEN
FRAME_IP_VIHL = FRAME_IP + IP_VIHL
FRAME_IP_PROTO = FRAME_IP + IP_PROTO
FRAME_IP_DST = FRAME_IP + IP_DST
FRAME_TCP = FRAME_IP + IP_MIN_HLEN
#: The flow-table key of a segment: IPv4 source and destination, TCP source and
#: destination port, as on the wire — the 12 bytes FRAME_FLOW_KEY..FRAME_FLOW_KEY_END.
FRAME_FLOW_KEY = FRAME_IP + IP_SRC
FRAME_FLOW_KEY_END = FRAME_TCP + TCP_DPORT + 2

# -- fixed-layout structs (network byte order) ----------------------------------------
U16 = struct.Struct("!H")
U32 = struct.Struct("!L")
#: Two 32-bit words: TSval/TSecr, a SACK block's edges.
U32X2 = struct.Struct("!II")
#: Source port, destination port, sequence and acknowledgement numbers (TCP_SPORT on).
TCP_PORTS_SEQ_ACK = struct.Struct("!HHII")
#: The flow-table key (see FRAME_FLOW_KEY).
FLOW_KEY = struct.Struct("!4s4sHH")


def flow_key(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    """The flow-table key of segments from ``src:sport`` to ``dst:dport``: the bytes
    ``FRAME_FLOW_KEY..FRAME_FLOW_KEY_END`` of such a frame."""
    return FLOW_KEY.pack(src, dst, sport, dport)


def ip_header_len(buf: BytesLike, ip: int) -> int:
    """Length in bytes of the IPv4 header at ``ip``, from its IHL."""
    return (buf[ip + IP_VIHL] & 0x0F) << 2


def tcp_header_len(buf: BytesLike, t: int) -> int:
    """Length in bytes of the TCP header at ``t``, from its data offset."""
    return (buf[t + TCP_DOFF] >> 4) << 2


def tcp_seq(buf: BytesLike, t: int) -> int:
    """The sequence number of the TCP header at ``t``."""
    return U32.unpack_from(buf, t + TCP_SEQ)[0]


def tcp_ack(buf: BytesLike, t: int) -> int:
    """The acknowledgement number of the TCP header at ``t``."""
    return U32.unpack_from(buf, t + TCP_ACK)[0]


def tcp_window(buf: BytesLike, t: int) -> int:
    """The (unscaled) window field of the TCP header at ``t``."""
    return U16.unpack_from(buf, t + TCP_WIN)[0]
