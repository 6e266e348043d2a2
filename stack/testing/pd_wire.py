"""Frames of the packetdrill runner: inbound packet lines to bytes, outbound bytes to
a comparable form, and the packetdrill-style text of both (for failure messages).

Options are kept as an ordered list, NOPs included, because the runner compares
the layout the stack chose, not just the set of values (as packetdrill does).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack import seq
from stack.testing.pd_parse import FLAG_BITS, OptItem, Packet, TsOpt
from stack.wire.ipv4 import Ipv4Header
from stack.wire.tcp import tcp_checksum, verify_tcp_checksum

ETH_IP = b"\x08\x00"
_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(slots=True)
class Endpoints:
    """Addresses and ports of one connection as seen from the remote peer."""

    remote_ip: bytes
    remote_port: int
    local_ip: bytes
    local_port: int


@dataclass(slots=True)
class Seen:
    """An outbound TCP segment, decoded (absolute numbers)."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    win: int
    payload_len: int
    options: list[OptItem]
    checksum_ok: bool


def flags_text(flags: int) -> str:
    """Packetdrill's flag letters, in its order (S, P, F, R, then ".")."""
    order = "SPFRUEW."
    return "".join(ch for ch in order if flags & FLAG_BITS[ch]) or "none"


def encode_options(items: list[OptItem], local_isn: int, ts_offset: int | None) -> bytes:
    """Option bytes in the order written, padded with EOL to a multiple of 4.

    SACK edges of an inbound packet name the stack's sequence space (relative to its
    ISN); an inbound ``TS ecr`` is in the stack's timestamp space (``ts_offset``).
    """
    out = bytearray()
    for item in items:
        kind = item[0]
        if kind == "nop":
            out.append(1)
        elif kind == "eol":
            out.append(0)
        elif kind == "mss":
            out += struct.pack("!BBH", 2, 4, item[1])
        elif kind == "wscale":
            out += bytes((3, 3, item[1]))
        elif kind == "sackOK":
            out += bytes((4, 2))
        elif kind == "TS":
            out += struct.pack("!BBII", 8, 10, *_inbound_ts(item[1], ts_offset))
        elif kind == "sack":
            out += bytes((5, 2 + 8 * len(item[1])))
            for left, right in item[1]:
                out += struct.pack("!II", seq.add(local_isn, left), seq.add(local_isn, right))
    out += bytes(-len(out) % 4)
    if len(out) > 40:
        raise ValueError(f"options take {len(out)} bytes, more than 40")
    return bytes(out)


def _inbound_ts(ts: TsOpt, ts_offset: int | None) -> tuple[int, int]:
    if ts.val is None or ts.ecr is None:
        raise ValueError("an inbound TS option needs numbers, not *")
    if ts.ecr == 0:
        return ts.val, 0
    if ts_offset is None:
        raise ValueError(f"TS ecr {ts.ecr}: no outbound TS val has anchored the stack's "
                         "timestamp clock yet")
    return ts.val, seq.add(ts.ecr, ts_offset)


def build_frame(pkt: Packet, ep: Endpoints, local_isn: int, ts_offset: int | None,
                dst_mac: bytes, src_mac: bytes, payload_byte: int = 0) -> bytes:
    """The Ethernet frame of an inbound packet line (payload: ``len`` equal bytes).

    The remote's sequence numbers are written as they are; ``ack`` is relative to the
    stack's ISN, as in packetdrill.
    """
    opts = encode_options(pkt.options or [], local_isn, ts_offset)
    ack = seq.add(local_isn, pkt.ack) if pkt.ack is not None else 0
    win = 65535 if pkt.win is None else pkt.win
    if win > 0xFFFF:
        raise ValueError(f"win {win} does not fit in 16 bits")
    length = seq.sub(pkt.end, pkt.start)
    hdr = _TCP.pack(ep.remote_port, ep.local_port, pkt.start, ack, (20 + len(opts)) << 2,
                    pkt.flags, win, 0, 0)
    seg = bytearray(hdr + opts + bytes([payload_byte]) * length)
    struct.pack_into("!H", seg, 16, tcp_checksum(ep.remote_ip, ep.local_ip, seg))
    ip = Ipv4Header(ep.remote_ip, ep.local_ip, 6).to_bytes(len(seg))
    return dst_mac + src_mac + ETH_IP + ip + bytes(seg)


def decode_options(raw: bytes) -> list[OptItem]:
    """The option list of an outbound segment, NOPs kept, EOL padding dropped."""
    items: list[OptItem] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            items.append(("nop",))
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            items.append(("malformed", raw[i:].hex()))
            break
        n = raw[i + 1]
        body = raw[i + 2:i + n]
        if kind == 2 and n == 4:
            items.append(("mss", struct.unpack("!H", body)[0]))
        elif kind == 3 and n == 3:
            items.append(("wscale", body[0]))
        elif kind == 4 and n == 2:
            items.append(("sackOK",))
        elif kind == 8 and n == 10:
            items.append(("TS", TsOpt(*struct.unpack("!II", body))))
        elif kind == 5 and (n - 2) % 8 == 0:
            items.append(("sack", tuple(struct.iter_unpack("!II", body))))
        else:
            items.append(("kind", kind, body.hex()))
        i += n
    return items


def decode_frame(frame: bytes) -> Seen | None:
    """An outbound IPv4/TCP frame, or None for anything else (the caller reports it)."""
    if len(frame) < 34 or frame[12:14] != ETH_IP or frame[14] >> 4 != 4 or frame[23] != 6:
        return None
    ihl = (frame[14] & 15) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    ip = frame[14:14 + total]
    tcp = ip[ihl:]
    if len(tcp) < 20:
        return None
    sport, dport, sq, ack, doff, flags, win, _c, _u = _TCP.unpack_from(tcp, 0)
    hlen = (doff >> 4) * 4
    src, dst = ip[12:16], ip[16:20]
    return Seen(src, dst, sport, dport, sq, ack, flags, win, len(tcp) - hlen,
                decode_options(tcp[20:hlen]), verify_tcp_checksum(src, dst, tcp))


def option_text(item: OptItem) -> str:
    """One option in script syntax."""
    kind = item[0]
    if kind in ("nop", "eol", "sackOK"):
        return kind
    if kind in ("mss", "wscale"):
        return f"{kind} {item[1]}"
    if kind == "TS":
        ts: TsOpt = item[1]
        val = "*" if ts.val is None else ts.val
        ecr = "*" if ts.ecr is None else ts.ecr
        return f"TS val {val} ecr {ecr}"
    if kind == "sack":
        return "sack " + " ".join(f"{a}:{b}" for a, b in item[1])
    return " ".join(str(x) for x in item)


def packet_text(direction: str, flags: int, start: int, length: int, ack: int | None,
                win: int | None, options: list[OptItem] | None) -> str:
    """A packet in script syntax (numbers as given)."""
    text = f"{direction} {flags_text(flags)} {start}:{seq.add(start, length)}({length})"
    if ack is not None:
        text += f" ack {ack}"
    if win is not None:
        text += f" win {win}"
    if options is None:
        text += " <...>"
    elif options:
        text += " <" + ",".join(option_text(o) for o in options) + ">"
    return text
