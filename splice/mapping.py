"""Splice mapping: how a segment of one spliced connection is renumbered for the other.

At splice time each of the proxy's two TCP connections is frozen into a
:class:`ConnSnapshot`; :func:`make_maps` turns the pair into one
:class:`DirectionMap` per direction, holding the constant deltas that the relay adds
to sequence, acknowledgement and timestamp values (docs/splice.md §4, §5) and the window
scales on either side. Everything here is pure and computed once per splice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stack.seq import MASK

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb

#: Timestamps agreed on both connections: map TSval and TSecr (docs/splice.md §5).
TS_MAP = 0
#: The outgoing connection did not agree on timestamps: overwrite the option with NOPs.
TS_STRIP = 1
#: SACK agreed on both connections: map the block edges (docs/splice.md §4).
SACK_MAP = 0
#: The outgoing connection has no SACK: overwrite SACK options with NOPs.
SACK_STRIP = 1

#: Largest window field value (RFC 9293 §3.1: a 16-bit field).
MAX_WIN_FIELD = 0xFFFF
#: Bytes the timestamp option takes in every segment (NOP, NOP, kind, length, 8 bytes).
_TS_OPT_ROOM = 12
#: Largest window shift a TCP may use (RFC 7323 §2.3).
MAX_WSCALE = 14


@dataclass(frozen=True, slots=True)
class ConnSnapshot:
    """One TCP connection of the proxy, frozen at splice time.

    ``snd_wscale`` is the peer's shift (it applies to windows the peer sends us),
    ``rcv_wscale`` ours (the peer applies it to windows we send); None means window
    scaling was not agreed. ``mss`` is the peer's MSS: the largest payload we may
    send it.
    """

    local: bytes
    local_port: int
    remote: bytes
    remote_port: int
    snd_nxt: int
    rcv_nxt: int
    ts_ok: bool
    ts_recent: int
    ts_sent: int
    sack_ok: bool
    snd_wscale: int | None
    rcv_wscale: int | None
    mss: int


def snapshot_of(tcb: Tcb, snd_nxt: int, rcv_nxt: int, ts_sent: int) -> ConnSnapshot:
    """A TCB frozen with the given base points and the TSval the
    relayed clock starts from."""
    return ConnSnapshot(
        local=tcb.local, local_port=tcb.local_port, remote=tcb.remote,
        remote_port=tcb.remote_port, snd_nxt=snd_nxt, rcv_nxt=rcv_nxt,
        ts_ok=tcb.ts_ok, ts_recent=tcb.ts_recent, ts_sent=ts_sent,
        sack_ok=tcb.sack_ok,
        snd_wscale=tcb.snd_wscale if tcb.wscale_ok else None,
        rcv_wscale=tcb.rcv_wscale if tcb.wscale_ok else None,
        mss=tcb.mss)


@dataclass(frozen=True, slots=True)
class DirectionMap:
    """How to rewrite a segment arriving on connection A and leaving on connection B.

    ``src``/``dst``/``sport``/``dport`` are B's local and remote address and port;
    the deltas are added modulo 2**32. ``win_in_shift`` is A's peer window shift,
    ``win_out_shift`` the shift B's peer applies to the windows it receives (0 when
    scaling is off). ``out_mss`` is B's peer MSS (see :class:`ConnSnapshot`) and
    ``out_opt_room`` the option bytes it already leaves room for; option bytes beyond
    that reduce the payload a segment may carry (RFC 6691, RFC 9293 §3.7.1).
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq_delta: int
    ack_delta: int
    tsval_delta: int
    tsecr_delta: int
    ts_mode: int
    sack_mode: int
    win_in_shift: int
    win_out_shift: int
    out_mss: int
    out_opt_room: int = 0
    #: src + dst, as they are laid out in the IPv4 header (for the relay).
    addrs: bytes = field(init=False, repr=False, compare=False)
    #: src and dst as 32-bit integers (for the relay's fast path).
    src_int: int = field(init=False, repr=False, compare=False)
    dst_int: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.src) != 4 or len(self.dst) != 4:
            raise ValueError("DirectionMap addresses must be 4-byte IPv4 addresses")
        for name in ("sport", "dport"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"DirectionMap {name} out of range")
        for name in ("win_in_shift", "win_out_shift"):
            if not 0 <= getattr(self, name) <= MAX_WSCALE:
                raise ValueError(f"DirectionMap {name} outside 0..{MAX_WSCALE}")
        if not 0 < self.out_mss <= 0xFFFF:
            raise ValueError(f"DirectionMap out_mss {self.out_mss} out of range")
        if not 0 <= self.out_opt_room <= 40:
            raise ValueError(f"DirectionMap out_opt_room {self.out_opt_room} out of range")
        if self.ts_mode not in (TS_MAP, TS_STRIP) or self.sack_mode not in (SACK_MAP,
                                                                           SACK_STRIP):
            raise ValueError("DirectionMap: unknown ts_mode or sack_mode")
        object.__setattr__(self, "addrs", bytes(self.src) + bytes(self.dst))
        object.__setattr__(self, "src_int", int.from_bytes(self.src, "big"))
        object.__setattr__(self, "dst_int", int.from_bytes(self.dst, "big"))


def _shift(wscale: int | None) -> int:
    if wscale is None:
        return 0
    if not 0 <= wscale <= MAX_WSCALE:
        raise ValueError(f"window scale {wscale} outside 0..{MAX_WSCALE}")
    return wscale


def _direction(a: ConnSnapshot, b: ConnSnapshot) -> DirectionMap:
    """The map for segments that arrive on ``a`` and leave on ``b``.

    docs/splice.md §4 with irs_a = a.rcv_nxt, iss_a = a.snd_nxt (and likewise for b):
    seq_out = seq_in - irs_a + iss_b, ack_out = ack_in - iss_a + irs_b; §5 takes the
    timestamp base points from what each connection last received and sent.
    """
    both_ts = a.ts_ok and b.ts_ok
    return DirectionMap(
        src=b.local, dst=b.remote, sport=b.local_port, dport=b.remote_port,
        seq_delta=(b.snd_nxt - a.rcv_nxt) & MASK,
        ack_delta=(b.rcv_nxt - a.snd_nxt) & MASK,
        tsval_delta=(b.ts_sent - a.ts_recent) & MASK if both_ts else 0,
        tsecr_delta=(b.ts_recent - a.ts_sent) & MASK if both_ts else 0,
        # Toward a connection without timestamps any TS option is removed; when only
        # the outgoing one has them, incoming segments carry none and leave without
        # (an option cannot be added in place without moving the payload).
        ts_mode=TS_MAP if both_ts else TS_STRIP,
        # Blocks acknowledge data of the other direction; they are only meaningful
        # (and only expected) when both connections agreed on SACK (RFC 2018 §2).
        sack_mode=SACK_MAP if a.sack_ok and b.sack_ok else SACK_STRIP,
        win_in_shift=_shift(a.snd_wscale),
        win_out_shift=_shift(b.rcv_wscale),
        out_mss=b.mss,
        out_opt_room=_TS_OPT_ROOM if b.ts_ok else 0,
    )


def make_maps(client: ConnSnapshot, server: ConnSnapshot) -> tuple[DirectionMap, DirectionMap]:
    """The (client->server, server->client) maps of a splice (docs/splice.md §4, §5).

    ValueError for a snapshot that cannot be mapped (window scale above 14, bad
    address length or port, MSS outside 1..65535).
    """
    return _direction(client, server), _direction(server, client)


def map_window(win_field: int, m: DirectionMap) -> int:
    """The window field to send out, given the field that arrived.

    The true window is ``win_field << m.win_in_shift``; the outgoing field is that
    shifted right by ``m.win_out_shift``, rounded DOWN and clamped to 65535. So the
    window the outgoing peer computes, ``result << m.win_out_shift``, never exceeds
    what the receiver advertised (RFC 9293 §3.8.6: a window must not be overstated,
    the offered space may not exist), at the cost of up to 2**shift - 1 bytes.
    """
    true_window = win_field << m.win_in_shift
    out = true_window >> m.win_out_shift
    return out if out <= MAX_WIN_FIELD else MAX_WIN_FIELD
