"""TCP option negotiation: MSS, window scale, SACK-permitted, timestamps.

Options are agreed on the SYN exchange only (RFC 9293 §3.7.1, RFC 7323 §1.3,
RFC 2018 §2): an option is in use when both SYNs carried it. Afterwards every
segment carries a timestamp when timestamps are in use (RFC 7323 §3.2), and ACKs
carry SACK blocks while the out_of_order_queue is not empty (RFC 2018 §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stack import seq
from stack.wire.tcp import TcpOptions

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb

#: RFC 7323 §2.3: a shift count above 14 is treated as 14.
MAX_WSCALE = 14
#: RFC 9293 §3.7.1: the MSS a peer that sends no MSS option is taken to have.
DEFAULT_PEER_MSS = 536
#: RFC 7323 §5.5: ts_recent older than 24 days is invalid for PAWS.
PAWS_24DAYS = 24 * 24 * 3600.0


class TsClock(Protocol):
    """What the RFC 7323 timestamp rules read and update: a Tcb, or the TIME-WAIT
    record that outlives it (stack/tcp/timewait.py)."""

    ts_offset: int
    ts_recent: int
    ts_recent_age: float

    @property
    def last_ack_sent(self) -> int:
        """RFC 7323 §4.3 Last.ACK.sent."""
        ...


def wscale_for(space: int) -> int:
    """The smallest shift that lets a 16-bit window field describe ``space`` bytes."""
    shift = 0
    while (0xFFFF << shift) < space and shift < MAX_WSCALE:
        shift += 1
    return shift


def tsval(tcb: TsClock, now: float) -> int:
    """Our timestamp clock: milliseconds plus a per-connection random offset (RFC 7323 §5.4)."""
    return (int(now * 1000.0) + tcb.ts_offset) & seq.MASK


def syn_options(tcb: Tcb, now: float, *, syn_ack: bool) -> TcpOptions:
    """Options of our SYN or SYN-ACK.

    On a SYN-ACK only the options the peer offered are echoed (RFC 7323 §2.2, §3.2;
    RFC 2018 §2).
    """
    opts = TcpOptions(mss=tcb.adv_mss)
    if tcb.wscale_ok or not syn_ack and tcb.config.window_scaling:
        opts.wscale = tcb.rcv_wscale
    if tcb.sack_ok or not syn_ack and tcb.config.sack:
        opts.sack_permitted = True
    if tcb.ts_ok or not syn_ack and tcb.config.timestamps:
        opts.timestamp = (tsval(tcb, now), tcb.ts_recent if syn_ack else 0)
    return opts


def send_mss(mss_min: int, peer_mss: int | None, adv_mss: int) -> int:
    """The MSS we send with, before the room for options comes off it.

    Without an MSS option the peer takes 536 (RFC 9293 §3.7.1). A smaller advertised
    value is raised to ``mss_min``: every IPv4 host reassembles 576-byte datagrams
    (RFC 1122 §3.3.2), and an MSS of 0 or 1 would make each byte a segment of its
    own, a cheap way for a peer to exhaust us. Our own link (``adv_mss``) still caps it.
    """
    value = DEFAULT_PEER_MSS if peer_mss is None else peer_mss
    return min(max(value, mss_min), adv_mss)


def apply_peer_syn(tcb: Tcb, peer: TcpOptions, now: float, *, we_sent_syn: bool) -> None:
    """Record what the peer's SYN (or SYN-ACK) offered and settle what is in use.

    ``we_sent_syn`` is True when our SYN already went out with every enabled option
    (active open), so agreement only needs the peer's side; on a passive open our
    SYN-ACK will echo exactly what is agreed here.
    """
    cfg = tcb.config
    tcb.mss = send_mss(cfg.mss_min, peer.mss, tcb.adv_mss)
    tcb.rcv_mss = tcb.mss
    tcb.wscale_ok = cfg.window_scaling and peer.wscale is not None
    if tcb.wscale_ok:
        tcb.snd_wscale = min(peer.wscale or 0, MAX_WSCALE)
    else:
        tcb.snd_wscale = 0
        tcb.rcv_wscale = 0
    tcb.sack_ok = cfg.sack and peer.sack_permitted
    tcb.ts_ok = cfg.timestamps and peer.timestamp is not None
    if tcb.ts_ok and peer.timestamp is not None:
        tcb.ts_recent = peer.timestamp[0]
        tcb.ts_recent_age = now
    if tcb.ts_ok:
        # RFC 6691 / RFC 9293 §3.7.1: the MSS counts payload only, so the options
        # every segment carries (timestamps, 12 bytes with padding) come out of it;
        # full segments would exceed the path MTU otherwise.
        tcb.mss -= 12
    del we_sent_syn  # agreement is symmetric: both flags were offered by us when enabled


def segment_options(tcb: Tcb, now: float, *, with_sack: bool = True) -> TcpOptions:
    """Options of a non-SYN segment: timestamps and, on ACKs, SACK blocks."""
    opts = TcpOptions()
    if tcb.ts_ok:
        opts.timestamp = (tsval(tcb, now), tcb.ts_recent)
    if with_sack and tcb.sack_ok and tcb.out_of_order_queue:
        from stack.tcp.sack import sack_blocks
        max_blocks = 3 if tcb.ts_ok else 4
        blocks = sack_blocks(tcb.out_of_order_queue, tcb.last_ooo, max_blocks)
        if blocks:
            opts.sack_blocks = tuple(blocks)
    return opts


def header_len(opts: TcpOptions) -> int:
    """Length of a TCP header carrying ``opts`` (RFC 9293 §3.1)."""
    n = 20
    if opts.mss is not None:
        n += 4
    if opts.timestamp is not None:
        n += 12  # NOP, NOP, TS (or SACK_PERM, TS) in Linux's layout
    elif opts.sack_permitted:
        n += 4
    if opts.wscale is not None:
        n += 4
    if opts.sack_blocks:
        n += 4 + 8 * len(opts.sack_blocks)
    return n


def update_ts_recent(tcb: TsClock, tsval_in: int, seg_seq: int, now: float) -> None:
    """RFC 7323 §4.3: remember TSval of a segment covering the last ACK we sent."""
    if seq.le(seg_seq, tcb.last_ack_sent) and seq.ge(tsval_in, tcb.ts_recent):
        tcb.ts_recent = tsval_in
        tcb.ts_recent_age = now


def paws_reject(tcb: TsClock, tsval_in: int, now: float) -> bool:
    """RFC 7323 §5.3: is this segment's TSval older than ts_recent (and ts_recent valid)?"""
    if now - tcb.ts_recent_age > PAWS_24DAYS:
        return False
    return seq.lt(tsval_in, tcb.ts_recent)
