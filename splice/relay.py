"""The relay fast path: rewrite one spliced segment in place (docs/splice.md §3-§5).

:func:`relay_rewrite` takes an Ethernet frame that arrived on one spliced connection
and turns it, in its own buffer, into the segment that leaves on the other one:
addresses and ports of the outgoing connection, sequence, acknowledgement and
timestamp values shifted by the constant deltas of a
:class:`~splice.mapping.DirectionMap`, the window rescaled without ever overstating
it, SACK blocks mapped or removed, and the checksums patched from the words that
changed (RFC 1624) — the payload is never read.

Checksums. A frame whose TCP checksum is complete gets it patched with the
difference between the old and new header words and pseudo-header addresses. A frame
marked VIRTIO_NET_HDR_F_NEEDS_CSUM carries only the pseudo-header sum, which the
device completes from csum_start: only the address part of that sum changes (the TCP
length is the same even when IP options are removed, because they are not part of
it). The incoming checksum is not verified here: the receive path did that (or the
device vouched for it) before handing the segment to the splice; a segment corrupted
earlier stays detectably corrupt, since patching keeps the error.

IP. Options are removed (the Ethernet and fixed IP headers move forward over them,
the payload stays where it is), the TTL is set to 64 because the splice is an
endpoint of both connections rather than a router, and the header checksum is
patched. The Ethernet addresses are left for the output path (neighbour lookup).

Validation happens before the first byte is written: a frame that cannot be relayed
raises :class:`RelayError` and is left unchanged, for the caller to count and drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from splice.mapping import SACK_MAP, TS_MAP, DirectionMap
from stack.gso import complete_checksum, segment_tcp4
from stack.skbuff import SkBuff
from stack.wire.checksum import fold, ones_sum, pseudo_header_sum
from stack.wire.errors import WireError
from stack.wire.fields import (
    ETH_HLEN,
    FRAME_TCP,
    IP_CSUM,
    IP_FRAG,
    IP_FRAG_MF_OFFSET,
    IP_MIN_HLEN,
    IP_PROTO,
    IP_SRC,
    IP_TOTLEN,
    IP_TTL,
    IP_VIHL_NO_OPTIONS,
    TCP_CSUM,
    TCP_DOFF,
    TCP_FLAGS,
    TCP_MIN_HLEN,
    TCP_OPTIONS,
    TCP_PORTS_SEQ_ACK,
    TCP_WIN,
    U16,
    U32X2,
)
from stack.wire.ipv4 import IPPROTO_TCP
from stack.wire.tcp import ACK, CWR, SYN, option_offsets, verify_tcp_checksum
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
)

_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_TCP = IPPROTO_TCP
_IP_MIN = IP_MIN_HLEN
_TTL = 64
_MASK32 = 0xFFFFFFFF
_M16 = 0xFFFF
_CSUM_OFFSET = TCP_CSUM
# The layout every Linux peer uses for timestamps alone: NOP, NOP, kind 8, length 10
# (RFC 7323 Appendix A), so TSval sits at offset 24 of a 32-byte header.
_NOP_NOP_TS = b"\x01\x01\x08\x0a"
_FAST_TS_HLEN = TCP_MIN_HLEN + 12
_FAST_TSVAL = TCP_OPTIONS + 4
_FAST_TS_END = TCP_OPTIONS + len(_NOP_NOP_TS)
_NOPS = b"\x01" * 40
# Kind, length, TSval, TSecr (RFC 7323 §3).
_TS_OPT_LEN = 10
# Both addresses, as one 8-byte run from the source address on.
_IP_ADDRS_END = IP_SRC + 8

_H = U16
_II = U32X2
_PORTS_SEQ_ACK = TCP_PORTS_SEQ_ACK
# TCP sport, dport, seq, ack, offset+flags, window, checksum (fast path, from TCP_SPORT)
_TCP_FIXED = struct.Struct("!HHIIHHH")
# IPv4 TTL, protocol, checksum, src, dst (fast path, from IP_TTL)
_IP_TAIL = struct.Struct("!BBHII")
# ethertype at ETH_TYPE; then IPv4 version/IHL, TOS, total length, ident, flags/fragment
_ETH_IP = struct.Struct("!12xHBBHHH")


class RelayError(ValueError):
    """A frame the relay cannot rewrite; ``reason`` names the drop counter.

    The frame is left unchanged when this is raised.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(slots=True)
class RelayResult:
    """What to send after a rewrite.

    ``frames`` is ``[skb]`` itself in the common case, or the software segments that
    replace it. ``payload_bytes`` is the TCP payload relayed (for per-splice counters).
    """

    frames: list[SkBuff]
    payload_bytes: int


def _check_frame(skb: SkBuff) -> tuple[int, int, int, int]:
    """Validate the frame; return (IP header length, IP total length, TCP header
    length, TCP flags). Nothing is written."""
    buf = skb.buf
    d = skb.data
    if skb.tail - d < ETH_HLEN + _IP_MIN + TCP_MIN_HLEN:
        raise RelayError("relay_truncated", f"{skb.tail - d} bytes")
    ethertype, vihl, _tos, tot_len, _ident, frag = _ETH_IP.unpack_from(buf, d)
    if ethertype != _ETHERTYPE_IPV4:
        raise RelayError("relay_not_ipv4", f"ethertype {ethertype:#06x}")
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < _IP_MIN:
        raise RelayError("relay_ip_bad_header", f"version/IHL {vihl:#04x}")
    if frag & IP_FRAG_MF_OFFSET:
        # MF or a fragment offset: only whole datagrams can be rewritten (the stack
        # reassembles before a segment reaches a splice).
        raise RelayError("relay_fragment")
    ip = d + ETH_HLEN
    if buf[ip + IP_PROTO] != _IPPROTO_TCP:
        raise RelayError("relay_not_tcp", f"protocol {buf[ip + IP_PROTO]}")
    if tot_len < ihl + TCP_MIN_HLEN or ETH_HLEN + tot_len > skb.tail - d:
        raise RelayError("relay_ip_bad_length", f"total length {tot_len}")
    t = ip + ihl
    thl = (buf[t + TCP_DOFF] >> 4) * 4
    if thl < TCP_MIN_HLEN or ihl + thl > tot_len:
        raise RelayError("relay_tcp_bad_offset", f"TCP header {thl} bytes")
    flags = buf[t + TCP_FLAGS]
    if flags & SYN:
        # Window and options of a SYN are not scaled/mapped like the others: a SYN
        # after the splice belongs to the TCP endpoint, not to the relay.
        raise RelayError("relay_syn")
    return ihl, tot_len, thl, flags


def _check_offload(skb: SkBuff, tcp_start: int) -> None:
    """The offload metadata must describe a TCPv4 frame whose checksum field is ours."""
    gso = skb.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso and (gso != VIRTIO_NET_HDR_GSO_TCPV4 or skb.gso_size <= 0):
        raise RelayError("relay_gso_type", f"gso_type {skb.gso_type} size {skb.gso_size}")
    if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and (
            skb.csum_start != tcp_start or skb.csum_offset != _CSUM_OFFSET):
        raise RelayError("relay_csum_offsets",
                         f"csum_start {skb.csum_start} offset {skb.csum_offset}")


def _find_options(buf: bytearray, t: int, thl: int) -> tuple[int, int, int]:
    """(TSval offset, first SACK block offset, SACK block count), offsets from the
    TCP header, -1 when absent. No option at all or NOP,NOP,TS skip the option walk."""
    if thl == TCP_MIN_HLEN:
        return -1, -1, 0
    if thl == _FAST_TS_HLEN and buf[t + TCP_OPTIONS:t + _FAST_TS_END] == _NOP_NOP_TS:
        return _FAST_TSVAL, -1, 0
    try:
        offs = option_offsets(memoryview(buf)[t:t + thl], thl)
    except WireError as e:
        raise RelayError("relay_bad_option", str(e)) from None
    return offs.timestamp, offs.sack, offs.sack_count


def _rewrite_ip(skb: SkBuff, m: DirectionMap, ihl: int, tot_len: int) -> int:
    """Strip options, set addresses and TTL, patch the header checksum; return the
    sum of the old addresses (for the TCP pseudo-header)."""
    buf = skb.buf
    d = skb.data
    ip = d + ETH_HLEN
    # Everything the old checksum covered, its own field included: the new header
    # keeps the same field until it is patched, so the field cancels out.
    old_sum = int.from_bytes(buf[ip:ip + ihl], "big")
    old_addrs = int.from_bytes(buf[ip + IP_SRC:ip + _IP_ADDRS_END], "big")
    if ihl > _IP_MIN:
        optlen = ihl - _IP_MIN
        # Move Ethernet + fixed IP header forward over the options: the TCP header
        # and payload stay where they are.
        buf[d + optlen:d + optlen + ETH_HLEN + _IP_MIN] = buf[d:d + ETH_HLEN + _IP_MIN]
        d += optlen
        skb.data = d
        ip = d + ETH_HLEN
        buf[ip] = IP_VIHL_NO_OPTIONS
        _H.pack_into(buf, ip + IP_TOTLEN, tot_len - optlen)
        if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            skb.csum_start -= optlen
        if skb.hdr_len:
            skb.hdr_len = max(0, skb.hdr_len - optlen)
    buf[ip + IP_TTL] = _TTL
    buf[ip + IP_SRC:ip + _IP_ADDRS_END] = m.addrs
    new_sum = int.from_bytes(buf[ip:ip + _IP_MIN], "big")
    csum = _H.unpack_from(buf, ip + IP_CSUM)[0]
    # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'); 2**16 ≡ 1 (mod 0xFFFF) lets whole
    # headers be read as integers instead of word by word.
    _H.pack_into(buf, ip + IP_CSUM,
                 ~fold((~csum & _M16) + new_sum % _M16 + _M16 - old_sum % _M16) & _M16)
    return old_addrs


def _map_options(buf: bytearray, t: int, m: DirectionMap, flags: int,
                 ts: int, sack: int, sack_count: int) -> None:
    """Map or NOP out the timestamp and SACK options (docs/splice.md §5)."""
    if ts >= 0:
        if m.ts_mode == TS_MAP:
            tsval, tsecr = _II.unpack_from(buf, t + ts)
            # TSecr is only meaningful with ACK set (RFC 7323 §3.2), like the ACK field.
            if flags & ACK:
                tsecr = (tsecr + m.tsecr_delta) & _MASK32
            _II.pack_into(buf, t + ts, (tsval + m.tsval_delta) & _MASK32, tsecr)
        else:
            opt = t + ts - 2  # the option's kind byte
            buf[opt:opt + _TS_OPT_LEN] = _NOPS[:_TS_OPT_LEN]
    if sack >= 0:
        if m.sack_mode == SACK_MAP:
            # Block edges acknowledge data of the other direction: they map like the
            # acknowledgement number of this segment (docs/splice.md §4).
            delta = m.ack_delta
            for off in range(t + sack, t + sack + 8 * sack_count, 8):
                left, right = _II.unpack_from(buf, off)
                _II.pack_into(buf, off, (left + delta) & _MASK32, (right + delta) & _MASK32)
        else:
            n = 2 + 8 * sack_count
            buf[t + sack - 2:t + sack - 2 + n] = _NOPS[:n]


def _rewrite_tcp(skb: SkBuff, m: DirectionMap, thl: int, flags: int, old_addrs: int,
                 opts: tuple[int, int, int]) -> None:
    """Ports, numbers, window, options and the checksum field of the TCP header."""
    buf = skb.buf
    t = skb.data + ETH_HLEN + _IP_MIN
    partial = skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
    if not partial:
        old_hdr = int.from_bytes(buf[t:t + thl], "big")
    _sport, _dport, seq, ack = _PORTS_SEQ_ACK.unpack_from(buf, t)
    seq = (seq + m.seq_delta) & _MASK32
    if flags & ACK:
        ack = (ack + m.ack_delta) & _MASK32
    _PORTS_SEQ_ACK.pack_into(buf, t, m.sport, m.dport, seq, ack)
    # Window: see splice.mapping.map_window (inlined on the hot path).
    win = (_H.unpack_from(buf, t + TCP_WIN)[0] << m.win_in_shift) >> m.win_out_shift
    _H.pack_into(buf, t + TCP_WIN, win if win <= _M16 else _M16)
    if opts[0] >= 0 or opts[1] >= 0:
        _map_options(buf, t, m, flags, *opts)
    new_addrs = int.from_bytes(m.addrs, "big")
    field = _H.unpack_from(buf, t + _CSUM_OFFSET)[0]
    if partial:
        # The field is the folded pseudo-header sum; the device sums the header.
        field = fold(field + new_addrs % _M16 + _M16 - old_addrs % _M16)
    else:
        new_hdr = int.from_bytes(buf[t:t + thl], "big")
        field = ~fold((~field & _M16) + (new_hdr + new_addrs) % _M16 + _M16
                      - (old_hdr + old_addrs) % _M16) & _M16
    _H.pack_into(buf, t + _CSUM_OFFSET, field)


def _rewrite_fast(buf: bytearray, d: int, m: DirectionMap, thl: int, flags: int,
                  partial: int) -> None:
    """The common case in one pass: no IP options, TCP options none or NOP,NOP,TS
    with timestamps mapped. Each 32-bit field enters the checksum difference as one
    integer: 2**16 ≡ 1 (mod 0xFFFF), so a 32-bit value is congruent to the sum of its
    two 16-bit words (RFC 1071 §2), and RFC 1624 eqn. 3 needs only sums."""
    ip = d + ETH_HLEN
    _ttl, _proto, ipc, src, dst = _IP_TAIL.unpack_from(buf, ip + IP_TTL)
    new_src, new_dst = m.src_int, m.dst_int
    # IP: TTL/protocol word and both addresses change. fold(x) is inlined as
    # (x - 1) % 0xFFFF + 1; the added 0xFFFF keeps x positive, so a sum folds to
    # 1..0xFFFF exactly as a full computation would, and a checksum is never 0xFFFF.
    old = (_ttl << 8 | _IPPROTO_TCP) + src + dst
    new = (_TTL << 8 | _IPPROTO_TCP) + new_src + new_dst
    ipc = ~(((~ipc & _M16) + (new - old) % _M16 + _M16 - 1) % _M16 + 1) & _M16
    _IP_TAIL.pack_into(buf, ip + IP_TTL, _TTL, _IPPROTO_TCP, ipc, new_src, new_dst)
    t = ip + _IP_MIN
    sport, dport, seq, ack, off_flags, win, csum = _TCP_FIXED.unpack_from(buf, t)
    new_seq = (seq + m.seq_delta) & _MASK32
    new_ack = (ack + m.ack_delta) & _MASK32 if flags & ACK else ack
    new_win = (win << m.win_in_shift) >> m.win_out_shift
    if new_win > _M16:
        new_win = _M16
    ts_old = ts_new = 0
    if thl == _FAST_TS_HLEN:
        tsval, tsecr = _II.unpack_from(buf, t + _FAST_TSVAL)
        new_tsval = (tsval + m.tsval_delta) & _MASK32
        # TSecr is only meaningful with ACK set (RFC 7323 §3.2), like the ACK field.
        new_tsecr = (tsecr + m.tsecr_delta) & _MASK32 if flags & ACK else tsecr
        _II.pack_into(buf, t + _FAST_TSVAL, new_tsval, new_tsecr)
        ts_old = tsval + tsecr
        ts_new = new_tsval + new_tsecr
    if partial:
        # Only the pseudo-header addresses are in the partial sum.
        csum = (csum + (new_src + new_dst - src - dst) % _M16 + _M16 - 1) % _M16 + 1
    else:
        old = src + dst + sport + dport + seq + ack + win + ts_old
        new = new_src + new_dst + m.sport + m.dport + new_seq + new_ack + new_win + ts_new
        csum = ~(((~csum & _M16) + (new - old) % _M16 + _M16 - 1) % _M16 + 1) & _M16
    _TCP_FIXED.pack_into(buf, t, m.sport, m.dport, new_seq, new_ack, off_flags, new_win,
                         csum)


def _to_partial(skb: SkBuff, m: DirectionMap, thl: int, tcp_len: int) -> None:
    """Turn a frame with a complete checksum into NEEDS_CSUM form (field = folded
    pseudo-header sum over the whole TCP length, not complemented)."""
    t = FRAME_TCP
    if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        _H.pack_into(skb.buf, skb.data + t + _CSUM_OFFSET,
                     pseudo_header_sum(m.src, m.dst, _IPPROTO_TCP, tcp_len))
    skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
    skb.csum_start = t
    skb.csum_offset = _CSUM_OFFSET
    skb.hdr_len = t + thl


def segment_limit(m: DirectionMap, thl: int) -> int:
    """Largest payload per segment toward ``m``'s outgoing peer for a TCP header of
    ``thl`` bytes: its MSS less the option bytes it did not already allow for
    (RFC 6691; NOPs left where an option was stripped count too)."""
    extra = thl - TCP_MIN_HLEN - m.out_opt_room
    if extra <= 0:
        return m.out_mss
    return max(1, m.out_mss - extra)


def _fit_offload(skb: SkBuff, m: DirectionMap, thl: int, flags: int, payload: int,
                 limit: int) -> None:
    """Out device with TSO: keep one frame, a super-segment of at most ``limit``
    payload bytes per segment (docs/splice.md §5.1)."""
    if skb.gso_type:
        if skb.gso_size > limit:
            skb.gso_size = limit
        if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            _to_partial(skb, m, thl, thl + payload)
    elif payload > limit:
        _to_partial(skb, m, thl, thl + payload)
        skb.gso_type = VIRTIO_NET_HDR_GSO_TCPV4
        if flags & CWR:
            # CWR goes on the first segment only (RFC 3168 §6.1.2): say so to the device.
            skb.gso_type |= VIRTIO_NET_HDR_GSO_ECN
        skb.gso_size = limit
    # A received frame's "checksum verified" note means nothing on output.
    skb.vnet_flags &= ~VIRTIO_NET_HDR_F_DATA_VALID


def _fit_software(skb: SkBuff, payload: int, limit: int) -> list[SkBuff]:
    """Out device without offloads: plain frames of at most ``limit`` payload each."""
    mss = limit
    if skb.gso_type and skb.gso_size < mss:
        mss = skb.gso_size
    if payload > mss:
        skb.gso_type = VIRTIO_NET_HDR_GSO_TCPV4
        skb.gso_size = mss
        return segment_tcp4(skb)
    complete_checksum(skb)
    skb.clear_vnet()
    return [skb]


def relay_rewrite(skb: SkBuff, m: DirectionMap, out_offload: bool) -> RelayResult:
    """Rewrite the frame in ``skb`` for the outgoing connection of ``m``, in place.

    ``out_offload`` says whether the outgoing device accepts partial checksums and
    TCPv4 segmentation offload. With it the result is always ``[skb]`` (made a
    super-segment when its payload exceeds :func:`segment_limit`); without it, plain
    frames with complete checksums: ``[skb]``, or software segments (new buffers that
    replace ``skb``) when the payload exceeds the limit. The caller fills in the
    Ethernet addresses. Raises :class:`RelayError` (frame unchanged) for what cannot
    be relayed.
    """
    ihl, tot_len, thl, flags = _check_frame(skb)
    buf = skb.buf
    d = skb.data
    if skb.vnet_flags or skb.gso_type:
        _check_offload(skb, ETH_HLEN + ihl)
    t = d + ETH_HLEN + ihl
    fast = ihl == _IP_MIN and (thl == TCP_MIN_HLEN or (
        thl == _FAST_TS_HLEN and m.ts_mode == TS_MAP
        and buf[t + TCP_OPTIONS:t + _FAST_TS_END] == _NOP_NOP_TS))
    if not fast:
        opts = _find_options(buf, t, thl)  # the last check: nothing written before it
    # Ethernet padding after the datagram must not reach a device that sums to the end.
    skb.tail = d + ETH_HLEN + tot_len
    if fast:
        _rewrite_fast(buf, d, m, thl, flags, skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
    else:
        old_addrs = _rewrite_ip(skb, m, ihl, tot_len)
        _rewrite_tcp(skb, m, thl, flags, old_addrs, opts)
    payload = tot_len - ihl - thl
    limit = m.out_mss if thl - TCP_MIN_HLEN <= m.out_opt_room else segment_limit(m, thl)
    if out_offload:
        if payload > limit or skb.vnet_flags or skb.gso_type:
            _fit_offload(skb, m, thl, flags, payload, limit)
        return RelayResult([skb], payload)
    return RelayResult(_fit_software(skb, payload, limit), payload)


_TRUSTED = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
#: A plain IPv4 header and a TCP header without options: the least a flow frame holds.
_FLOW_MIN_TOTLEN = IP_MIN_HLEN + TCP_MIN_HLEN
# The flags/fragment word's high byte without DF: MF and the top of the offset.
_FRAG_HI = IP_FRAG_MF_OFFSET >> 8


def flow_frame_ip(skb: SkBuff) -> int:
    """For the flow-table fast paths (straight from the device, data at the Ethernet
    header): the offset of the IPv4 header when the frame has a plain 20-byte header
    with a valid checksum, is no fragment and holds its total length — ``skb.tail`` is
    then cut to that length (Ethernet padding off) — else -1 (take the normal path)."""
    buf = skb.buf
    ip = skb.data + ETH_HLEN
    totlen = (buf[ip + IP_TOTLEN] << 8) | buf[ip + IP_TOTLEN + 1]
    if (totlen > skb.tail - ip or totlen < _FLOW_MIN_TOTLEN
            or buf[ip + IP_FRAG] & _FRAG_HI or buf[ip + IP_FRAG + 1]
            or ones_sum(memoryview(buf)[ip:ip + _IP_MIN]) != 0xFFFF):
        return -1
    skb.tail = ip + totlen
    return ip


def flow_tcp_valid(skb: SkBuff, t: int, remote: bytes, local: bytes) -> bool:
    """The TCP checksum of the segment at ``t`` is right, or the device vouched for it."""
    return bool(skb.vnet_flags & _TRUSTED) or verify_tcp_checksum(
        remote, local, memoryview(skb.buf)[t:skb.tail])
