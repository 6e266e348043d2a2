"""IPv4 reassembly (RFC 791 §3.2, RFC 815 holes), bounded in memory and time.

Only datagrams addressed to the stack are reassembled; forwarded fragments pass
through untouched. Each datagram in progress is keyed by (src, dst, proto, id)
(RFC 791). Limits: ``max_datagrams`` in progress, ``max_bytes`` buffered in total,
``timeout`` seconds per datagram (RFC 1122 §3.3.2 suggests 60-120 s; Linux uses 30 s).
Overlapping fragments are rejected whole (RFC 5722's reasoning for IPv6 applies:
overlaps are an attack, not a network artefact), as is a datagram over 65,535 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Partial:
    first_seen: float
    header: bytes = b""                 # IP header of the first fragment (offset 0)
    total: int = -1                     # payload length, known once the last fragment came
    pieces: dict[int, bytes] = field(default_factory=dict)   # offset -> payload
    size: int = 0


@dataclass(slots=True)
class Reassembled:
    """A whole datagram: the first fragment's header (options kept) and the payload."""

    header: bytes
    payload: bytes


class Reassembler:
    """Reassembly buffers for fragments addressed to the stack."""

    def __init__(self, *, max_datagrams: int = 64, max_bytes: int = 1 << 20,
                 timeout: float = 30.0, header_allowance: int = 0, quote: int = 8) -> None:
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        #: Header bytes not counted against the 65,535-byte limit (IPv6's fixed header
        #: and fragment header: its limit is on the payload length, RFC 8200 §4.5).
        self.header_allowance = header_allowance
        #: Bytes of the first fragment's payload that :meth:`expire` quotes.
        self.quote = quote
        self.partials: dict[tuple[bytes, bytes, int, int], _Partial] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.partials)

    def add(self, key: tuple[bytes, bytes, int, int], header: bytes, offset: int, mf: bool,
            payload: bytes, now: float) -> tuple[Reassembled | None, str | None]:
        """Take one fragment. Returns (datagram if now complete, drop reason or None)."""
        p = self.partials.get(key)
        if p is None:
            if len(self.partials) >= self.max_datagrams:
                return None, "frag_table_full"
            p = self.partials[key] = _Partial(first_seen=now)
        end = offset + len(payload)
        if end > MAX_DATAGRAM + self.header_allowance - len(header) or (mf and len(payload) % 8):
            self._forget(key)
            return None, "frag_bad_length"
        if self.bytes + len(payload) > self.max_bytes:
            self._forget(key)
            return None, "frag_memory"
        for off, data in p.pieces.items():
            if offset < off + len(data) and off < end:
                if off == offset and data == payload:
                    return None, "frag_duplicate"
                self._forget(key)
                return None, "frag_overlap"
        if not mf:
            if p.total >= 0 and p.total != end:
                self._forget(key)
                return None, "frag_bad_length"
            p.total = end
        elif p.total >= 0 and end > p.total:
            self._forget(key)
            return None, "frag_bad_length"
        if offset == 0:
            p.header = header
        p.pieces[offset] = payload
        p.size += len(payload)
        self.bytes += len(payload)
        if p.total >= 0 and p.size == p.total and p.header:
            self._forget(key)
            data = b"".join(p.pieces[o] for o in sorted(p.pieces))
            return Reassembled(p.header, data), None
        return None, None

    def _forget(self, key: tuple[bytes, bytes, int, int]) -> None:
        p = self.partials.pop(key, None)
        if p is not None:
            self.bytes -= p.size

    def next_deadline(self) -> float | None:
        """When the oldest datagram in progress times out."""
        if not self.partials:
            return None
        return min(p.first_seen for p in self.partials.values()) + self.timeout

    def expire(self, now: float) -> list[bytes]:
        """Drop timed-out datagrams; return the first-fragment headers of those that had
        one, with ``quote`` bytes of its payload (RFC 792, RFC 8200 §4.5: time
        exceeded, code 1, only when fragment zero arrived)."""
        out = []
        for key, p in list(self.partials.items()):
            if p.first_seen + self.timeout <= now:
                if p.header:
                    first = p.pieces.get(0, b"")
                    out.append(p.header + first[:self.quote])
                self._forget(key)
        return out


def fragment(header: bytes | memoryview, payload: bytes | memoryview, mtu: int) -> list[bytes]:
    """Split one IPv4 datagram into fragments that fit ``mtu`` (RFC 791 §3.2).

    ``header`` is the datagram's IP header (checksum is recomputed per fragment).
    Options are copied only into the first fragment unless their copy flag is set;
    keeping it simple and safe, fragments after the first carry no options (the
    copied-flag options, security and source routes, are not generated here).
    Raises ValueError when the MTU leaves no room for 8 bytes of payload.
    """
    from stack.wire import checksum as cks
    from stack.wire.fields import (
        IP_CSUM,
        IP_FLAG_MF,
        IP_FRAG,
        IP_FRAG_OFFSET_MASK,
        IP_MIN_HLEN,
        IP_TOTLEN,
        U16,
    )

    ihl = len(header)
    base = bytes(header[:IP_MIN_HLEN])
    first_room = (mtu - ihl) & ~7
    later_room = (mtu - IP_MIN_HLEN) & ~7
    if first_room < 8 or later_room < 8:
        raise ValueError(f"MTU {mtu} too small to fragment")
    flags_off = U16.unpack_from(header, IP_FRAG)[0]
    orig_mf = flags_off & IP_FLAG_MF
    orig_off = (flags_off & IP_FRAG_OFFSET_MASK) * 8
    out = []
    pos = 0
    total = len(payload)
    while pos < total:
        hdr = bytearray(header if pos == 0 else base)
        room = first_room if pos == 0 else later_room
        chunk = payload[pos:pos + room]
        last = pos + len(chunk) >= total
        hl = len(hdr)
        hdr[0] = 0x40 | (hl // 4)
        U16.pack_into(hdr, IP_TOTLEN, hl + len(chunk))
        mf = IP_FLAG_MF if (not last or orig_mf) else 0
        U16.pack_into(hdr, IP_FRAG, mf | ((orig_off + pos) // 8))
        U16.pack_into(hdr, IP_CSUM, 0)
        U16.pack_into(hdr, IP_CSUM, cks.checksum(hdr))
        out.append(bytes(hdr) + bytes(chunk))
        pos += len(chunk)
    return out
