"""TCP header and options (RFC 9293 §3.1, RFC 7323, RFC 2018), and the TCP checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from stack.wire.checksum import adjust_sum, ones_sum, pseudo_header_sum, pseudo_header_sum6
from stack.wire.errors import BytesLike, WireError
from stack.wire.fields import TCP_ACK as TCP_ACK
from stack.wire.fields import TCP_CSUM as TCP_CSUM
from stack.wire.fields import TCP_DOFF as TCP_DOFF
from stack.wire.fields import TCP_DPORT as TCP_DPORT
from stack.wire.fields import TCP_FLAGS as TCP_FLAGS
from stack.wire.fields import TCP_MIN_HLEN as TCP_MIN_HLEN
from stack.wire.fields import TCP_SEQ as TCP_SEQ
from stack.wire.fields import TCP_SPORT as TCP_SPORT
from stack.wire.fields import TCP_URP as TCP_URP
from stack.wire.fields import TCP_WIN as TCP_WIN

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# Byte offsets of header fields (for in-place rewriting) are stack.wire.fields'; the
# codec re-exports them for its callers.
TCP_MAX_OPTLEN = 40
TCP_MAX_HLEN = TCP_MIN_HLEN + TCP_MAX_OPTLEN

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

IPPROTO_TCP = 6

#: The fixed header for the fast path: sport, dport, seq, ack, data offset byte, flags, window, checksum, urgent.
TCP_HEADER = struct.Struct("!HHIIBBHHH")
_TCP = TCP_HEADER
_H = struct.Struct("!H")
_II = struct.Struct("!II")
_MSS_OPT = struct.Struct("!BBH")
_TS_OPT = struct.Struct("!BBBBII")
_SACK_HDR = struct.Struct("!BBBB")
_SACK_BLOCK = struct.Struct("!II")
_MAX_SACK_BLOCKS = 4
_KNOWN_KINDS = frozenset({OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERM, OPT_SACK,
                          OPT_TIMESTAMP})
# Exact option lengths (kind + length bytes included) that RFC 9293 §3.2, RFC 7323 §2.2,
# §3.2 and RFC 2018 §2 prescribe; SACK is checked separately (2 + 8n).
_FIXED_LEN = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERM: 2, OPT_TIMESTAMP: 10}


_FLAG_LETTERS = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
                 (ECE, "E"), (CWR, "W"))


def flags_str(flags: int) -> str:
    """tcpdump-style flag letters for logs and traces: ``SYN|ACK`` -> ``"S."``."""
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit) or "none"


@dataclass(slots=True)
class TcpOptions:
    """The options of one segment, decoded.

    ``timestamp`` is (TSval, TSecr); ``sack_blocks`` are (left, right) edges;
    ``unknown`` keeps options of other kinds as (kind, data). ``wscale`` is kept as
    received even above 14: the TCP layer clamps it (RFC 7323 §2.3).
    """

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    timestamp: tuple[int, int] | None = None
    sack_blocks: tuple[tuple[int, int], ...] = ()
    unknown: tuple[tuple[int, bytes], ...] = ()


def _walk(buf: BytesLike, start: int, end: int) -> list[tuple[int, int, int]]:
    """Validated (kind, offset, length) of each option in ``buf[start:end]``.

    End of Option List stops the walk, No Operation is skipped (RFC 9293 §3.1).
    """
    found: list[tuple[int, int, int]] = []
    i = start
    while i < end:
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise WireError("tcp_bad_option", f"kind {kind} without length")
        length = buf[i + 1]
        if length < 2 or i + length > end:
            raise WireError("tcp_bad_option", f"kind {kind} length {length}")
        want = _FIXED_LEN.get(kind)
        if want is not None and length != want:
            raise WireError("tcp_bad_option", f"kind {kind} length {length} != {want}")
        if kind == OPT_SACK:
            blocks, rem = divmod(length - 2, 8)
            if rem or not 1 <= blocks <= _MAX_SACK_BLOCKS:
                raise WireError("tcp_bad_option", f"SACK length {length}")
        found.append((kind, i, length))
        i += length
    return found


def parse_options(buf: BytesLike) -> TcpOptions:
    """Decode the option bytes of a segment (reason "tcp_bad_option")."""
    opts = TcpOptions()
    unknown: list[tuple[int, bytes]] = []
    for kind, i, length in _walk(buf, 0, len(buf)):
        if kind == OPT_MSS:
            opts.mss = _H.unpack_from(buf, i + 2)[0]
        elif kind == OPT_WSCALE:
            opts.wscale = buf[i + 2]
        elif kind == OPT_SACK_PERM:
            opts.sack_permitted = True
        elif kind == OPT_TIMESTAMP:
            opts.timestamp = _II.unpack_from(buf, i + 2)
        elif kind == OPT_SACK:
            opts.sack_blocks = tuple(_SACK_BLOCK.unpack_from(buf, j)
                                     for j in range(i + 2, i + length, 8))
        else:
            unknown.append((kind, bytes(buf[i + 2:i + length])))
    if unknown:
        opts.unknown = tuple(unknown)
    return opts


def _emit_known(opts: TcpOptions, out: bytearray) -> None:
    # Linux's layout keeps every multi-byte value 32-bit aligned: MSS; then TS
    # behind NOP,NOP or, on a SYN that also permits SACK, behind SACK_PERM; then
    # NOP,WS; then NOP,NOP,SACK blocks.
    if opts.mss is not None:
        out += _MSS_OPT.pack(OPT_MSS, 4, opts.mss)
    if opts.timestamp is not None:
        lead = (OPT_SACK_PERM, 2) if opts.sack_permitted else (OPT_NOP, OPT_NOP)
        out += _TS_OPT.pack(*lead, OPT_TIMESTAMP, 10, *opts.timestamp)
    elif opts.sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
    if opts.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, opts.wscale))
    if opts.sack_blocks:
        n = len(opts.sack_blocks)
        if n > _MAX_SACK_BLOCKS:
            raise WireError("tcp_bad_field", f"{n} SACK blocks")
        out += _SACK_HDR.pack(OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * n)
        for left, right in opts.sack_blocks:
            out += _SACK_BLOCK.pack(left, right)


def emit_options(opts: TcpOptions) -> bytes:
    """Encode options, NOP-padded to a multiple of 4; ValueError (WireError) if > 40 bytes.

    Unknown options go last, as given.
    """
    out = bytearray()
    try:
        _emit_known(opts, out)
        for kind, data in opts.unknown:
            if kind in _KNOWN_KINDS or len(data) > TCP_MAX_OPTLEN - 2:
                raise WireError("tcp_bad_field", f"cannot emit unknown option {kind}")
            out += bytes((kind, 2 + len(data))) + data
    except WireError:
        raise
    except (struct.error, ValueError, TypeError) as e:
        raise WireError("tcp_bad_field", str(e)) from None
    out += bytes((OPT_NOP,)) * (-len(out) % 4)
    if len(out) > TCP_MAX_OPTLEN:
        raise WireError("tcp_options_too_long", f"{len(out)} bytes")
    return bytes(out)


@dataclass(slots=True)
class OptionOffsets:
    """Offsets (from the TCP header start) of option values, -1 when absent.

    ``timestamp`` points at TSval (TSecr follows at +4); ``sack`` at the first
    block's left edge, with ``sack_count`` blocks of 8 bytes.
    """

    mss: int = -1
    wscale: int = -1
    timestamp: int = -1
    sack: int = -1
    sack_count: int = 0


def option_offsets(buf: BytesLike, header_len: int) -> OptionOffsets:
    """Locate the option values of the TCP header at the start of ``buf``.

    For in-place rewriting by the splice relay. Reasons "tcp_bad_data_offset" for a
    header length that does not fit, "tcp_bad_option" for a bad option layout.
    """
    if not TCP_MIN_HLEN <= header_len <= min(len(buf), TCP_MAX_HLEN):
        raise WireError("tcp_bad_data_offset", f"header length {header_len}")
    offs = OptionOffsets()
    for kind, i, length in _walk(buf, TCP_MIN_HLEN, header_len):
        if kind == OPT_MSS:
            offs.mss = i + 2
        elif kind == OPT_WSCALE:
            offs.wscale = i + 2
        elif kind == OPT_TIMESTAMP:
            offs.timestamp = i + 2
        elif kind == OPT_SACK:
            offs.sack = i + 2
            offs.sack_count = (length - 2) // 8
    return offs


@dataclass(slots=True)
class TcpHeader:
    """A TCP header. ``header_len`` is the data offset in bytes; 0 = compute on emit."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    checksum: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)
    header_len: int = 0

    @classmethod
    def parse(cls, buf: BytesLike) -> TcpHeader:
        """Decode the header at the start of the segment ``buf``.

        Reasons: "tcp_truncated", "tcp_bad_data_offset" (data offset < 5 or past the
        buffer), "tcp_bad_option". The checksum is not verified here (see
        :func:`verify_tcp_checksum`): it needs the IP addresses.
        """
        if len(buf) < TCP_MIN_HLEN:
            raise WireError("tcp_truncated", f"{len(buf)} bytes")
        sport, dport, seq, ack, doff, flags, window, csum, urgent = _TCP.unpack_from(buf, 0)
        hlen = (doff >> 4) * 4
        if hlen < TCP_MIN_HLEN or hlen > len(buf):
            raise WireError("tcp_bad_data_offset", f"header {hlen} bytes, buffer {len(buf)}")
        if hlen == TCP_MIN_HLEN:
            opts = TcpOptions()
        else:
            opts = parse_options(memoryview(buf)[TCP_MIN_HLEN:hlen])
        return cls(sport, dport, seq, ack, flags, window, urgent, csum, opts, hlen)

    def emit_into(self, buf: bytearray | memoryview, offset: int) -> int:
        """Write header and options with a zero checksum field; return the header length.

        A nonzero ``header_len`` larger than needed is honoured by padding the options
        with zero bytes (End of Option List).
        """
        opts = emit_options(self.options)
        hlen = TCP_MIN_HLEN + len(opts)
        if self.header_len:
            if (self.header_len < hlen or self.header_len > TCP_MAX_HLEN
                    or self.header_len % 4):
                raise WireError("tcp_bad_field", f"header_len {self.header_len}")
            hlen = self.header_len
        if offset < 0 or len(buf) - offset < hlen:
            raise WireError("tcp_bad_field", "buffer too small for the header")
        try:
            _TCP.pack_into(buf, offset, self.sport, self.dport, self.seq, self.ack,
                           hlen << 2, self.flags, self.window, 0, self.urgent)
        except struct.error as e:
            raise WireError("tcp_bad_field", str(e)) from None
        start = offset + TCP_MIN_HLEN
        buf[start:start + len(opts)] = opts
        buf[start + len(opts):offset + hlen] = bytes(hlen - TCP_MIN_HLEN - len(opts))
        return hlen

    def to_bytes(self) -> bytes:
        """Header and options, checksum field zero."""
        out = bytearray(TCP_MAX_HLEN)
        return bytes(out[:self.emit_into(out, 0)])


def tcp_checksum(src: bytes, dst: bytes, segment: BytesLike) -> int:
    """The checksum ``segment`` should carry, whatever its checksum field holds now.

    The stored field is subtracted from the sum rather than zeroed in a copy, so a
    64 KB segment is summed once and never copied.
    """
    if len(segment) < TCP_CSUM + 2:
        raise WireError("tcp_truncated", f"{len(segment)} bytes")
    s = ones_sum(segment, _pseudo(src, dst, len(segment)))
    stored = _H.unpack_from(segment, TCP_CSUM)[0]
    return ~adjust_sum(s, stored, 0) & 0xFFFF


def verify_tcp_checksum(src: bytes, dst: bytes, segment: BytesLike) -> bool:
    """True if the segment's checksum field is right (the whole sum is 0xFFFF)."""
    return ones_sum(segment, _pseudo(src, dst, len(segment))) == 0xFFFF


def _pseudo(src: bytes, dst: bytes, length: int) -> int:
    """The pseudo-header sum of IPv4 (RFC 9293 §3.1) or IPv6 (RFC 8200 §8.1)
    addresses."""
    if len(src) == 16:
        return pseudo_header_sum6(src, dst, IPPROTO_TCP, length)
    return pseudo_header_sum(src, dst, IPPROTO_TCP, length)


def build_segment(src: bytes, dst: bytes, hdr: TcpHeader, payload: BytesLike = b"") -> bytes:
    """Header + options + payload with the checksum filled in (tests and slow path)."""
    head = hdr.to_bytes()
    out = bytearray(len(head) + len(payload))
    out[:len(head)] = head
    out[len(head):] = payload
    _H.pack_into(out, TCP_CSUM, tcp_checksum(src, dst, out))
    return bytes(out)
