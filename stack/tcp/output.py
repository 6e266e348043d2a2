"""Segment output: queueing, segmentation (TSO), windows, ACKs, RSTs, retransmission.

Transmission follows RFC 9293 §3.8.6 and RFC 5681/6675: new data leaves when the
peer's window, the congestion window, Nagle (RFC 896) and sender SWS avoidance allow;
segments marked LOST are retransmitted first, while the pipe stays below cwnd.
With an offloading route the write queue holds TSO-sized buffers that leave as
one super-segment each; while cwnd-limited, small openings are left to grow
(TSO deferral) so that segments stay large.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack import seq
from stack.netfamily import IPV4, IPV6, family_of
from stack.skbuff import SkBuff
from stack.tcp import rack
from stack.tcp.api import IPPROTO_TCP, MAX_HEADER, TcpState
from stack.tcp.options import segment_options, syn_options, wscale_for
from stack.tcp.sack import LOST, RETRANS, SACKED, split_buffer
from stack.wire.fields import TCP_CSUM, U16
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TCP_MAX_HLEN,
    TcpHeader,
    TcpOptions,
    tcp_checksum,
)
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM

if TYPE_CHECKING:
    from stack.tcp.layer import TcpLayer
    from stack.tcp.tcb import Tcb

_CSUM = U16
#: The smallest path MTU believed from an ICMP "fragmentation needed" (Linux's
#: min_pmtu: 512 bytes of data + 20 of IPv4 + 20 of TCP headers); IPv6's is its
#: minimum MTU (stack/netfamily.py).
PMTU_MIN = IPV4.pmtu_min
_CSUM_OFFSET = TCP_CSUM

#: States in which queued data and our FIN may be (re)transmitted.
SENDING = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_1,
                     TcpState.CLOSING, TcpState.LAST_ACK})


def wscale_for_buffer(space: int) -> int:
    """Our receive window scale for a buffer that may grow to ``space`` bytes."""
    return wscale_for(space)


# ------------------------------------------------------------------ emission
def emit(layer: TcpLayer, src: bytes, dst: bytes, hdr: TcpHeader,
         parts: list[memoryview], plen: int, offload: bool, gso_size: int,
         now: float, *, df: bool = True) -> bool:
    """Build one segment (header + payload parts) and hand it to the IP layer
    (with DF set unless ``df`` is False).

    The payload is copied once, into a fresh buffer with MAX_HEADER headroom in
    front of the TCP header. Offload metadata (csum_start, and hdr_len for a
    super-segment) is relative to the TCP header, like the contract's csum_start.
    """
    skb = SkBuff(MAX_HEADER + TCP_MAX_HLEN + plen, MAX_HEADER + TCP_MAX_HLEN)
    for p in parts:
        skb.put_data(p)
    # the header length is only known once emitted: emit into a scratch area first
    scratch = bytearray(TCP_MAX_HLEN)
    hlen = hdr.emit_into(scratch, 0)
    head = skb.push(hlen)
    head[:] = scratch[:hlen]
    seg = skb.view()
    total = hlen + plen
    if offload:
        fam = IPV6 if len(src) == 16 else IPV4     # (family_of, inline: per segment)
        _CSUM.pack_into(skb.buf, skb.data + _CSUM_OFFSET,
                        fam.pseudo_header_sum(src, dst, IPPROTO_TCP, total))
        skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
        skb.csum_start = 0
        skb.csum_offset = _CSUM_OFFSET
        if plen > gso_size > 0:
            skb.gso_type = fam.gso_tcp
            skb.gso_size = gso_size
            skb.hdr_len = hlen
    else:
        _CSUM.pack_into(skb.buf, skb.data + _CSUM_OFFSET, tcp_checksum(src, dst, seg))
    if df:
        ok = layer.ip.ip_output(src, dst, IPPROTO_TCP, skb, now)
    else:
        ok = layer.ip.ip_output(src, dst, IPPROTO_TCP, skb, now, df=False)
    layer.counters["segs_out"] += 1
    if not ok:
        layer.count("tx_local_drop")
    return ok


def rcv_space(tcb: Tcb) -> int:
    """Free space of the receive buffer."""
    return max(0, tcb.rcvbuf - tcb.rcv_queued - tcb.ooo_bytes)


def select_window(tcb: Tcb) -> int:
    """The window field to advertise now; records the new right edge in ``rcv_adv``.

    Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the right edge only moves on when
    it can move by min(RCV.BUFF/2, MSS). Otherwise the current window is kept,
    rounded up to the scale granularity when the buffer has room for that, else
    rounded down: the edge then appears to move back by less than 2**shift bytes
    (RFC 7323 Appendix F), which keeps rounding from overcommitting the buffer a
    little more with every ACK. ``rcv_adv`` itself never moves back, so data up
    to it is still accepted.
    """
    shift = tcb.rcv_wscale
    gran = 1 << shift
    cur = max(0, seq.sub(tcb.rcv_adv, tcb.rcv_nxt))
    free = min(rcv_space(tcb), 0xFFFF << shift)
    if free - cur >= min(tcb.rcvbuf // 2, tcb.rcv_mss):
        field = free >> shift
    else:
        field = (cur + gran - 1) >> shift
        if field << shift > free:
            field = cur >> shift
    field = min(field, 0xFFFF)
    edge = seq.add(tcb.rcv_nxt, field << shift)
    if seq.gt(edge, tcb.rcv_adv) or tcb.rcv_adv == tcb.rcv_nxt:
        tcb.rcv_adv = edge
    tcb.rcv_wnd = seq.sub(tcb.rcv_adv, tcb.rcv_nxt)
    return field


def send_segment(tcb: Tcb, seq_: int, flags: int, now: float, *,
                 parts: list[memoryview] | None = None, plen: int = 0,
                 opts: TcpOptions | None = None) -> bool:
    """Emit one segment of this connection with the current ACK, window and options."""
    if opts is None:
        # SACK blocks only on segments without data: with them a full-sized segment
        # would exceed the MSS (RFC 6691), which only accounts for the timestamps.
        opts = segment_options(tcb, now, with_sack=bool(flags & ACK) and plen == 0)
    if flags & SYN:
        window = min(tcb.rcvbuf, 0xFFFF)  # RFC 7323 §2.2: never scaled on a SYN
        tcb.rcv_adv = seq.add(tcb.rcv_nxt, window)
        tcb.rcv_wnd = window
    else:
        window = select_window(tcb)
    ack_no = tcb.rcv_nxt if flags & ACK else 0
    hdr = TcpHeader(tcb.local_port, tcb.remote_port, seq_, ack_no, flags, window,
                    options=opts)
    if flags & ACK:
        tcb.last_ack_sent = tcb.rcv_nxt
        tcb.ack_now = False
        tcb.timer_delack = None
    tcb.segs_out += 1
    return emit(tcb.layer, tcb.local, tcb.remote, hdr, parts or [], plen,
                tcb.offload, tcb.mss, now, df=not tcb.pmtu_locked)


def send_ack(tcb: Tcb, now: float) -> None:
    """A pure ACK <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>."""
    send_segment(tcb, tcb.snd_nxt, ACK, now)


def send_challenge_ack(tcb: Tcb, now: float) -> None:
    """RFC 5961 §3.2/§4.2/§5.2 challenge ACK, within the layer-wide rate limit (§7)."""
    if tcb.layer.challenge_ack_allowed(now):
        tcb.layer.count("challenge_ack")
        send_ack(tcb, now)
    else:
        tcb.layer.count("challenge_ack_ratelimited")


def send_rst(tcb: Tcb, seq_: int, now: float) -> None:
    """<SEQ=seq_><CTL=RST,ACK> from an existing connection (abort, RFC 9293 §3.10.5)."""
    opts = TcpOptions(timestamp=segment_options(tcb, now, with_sack=False).timestamp)
    send_segment(tcb, seq_, RST | ACK, now, opts=opts)


def send_syn(tcb: Tcb, now: float) -> None:
    """Our SYN (active open) or SYN-ACK (passive or simultaneous open)."""
    syn_ack = tcb.state is TcpState.SYN_RECEIVED
    opts = syn_options(tcb, now, syn_ack=syn_ack)
    flags = SYN | ACK if syn_ack else SYN
    send_segment(tcb, tcb.iss, flags, now, opts=opts)
    tcb.snd_nxt = seq.add(tcb.iss, 1)
    if tcb.timer_rtx is None:
        tcb.timer_rtx = now + tcb.rtt.rto
        tcb.rtx_kind = "rtx"


def send_probe(tcb: Tcb, now: float) -> None:
    """Zero-window or keepalive probe: an old sequence number that forces an ACK."""
    send_segment(tcb, seq.add(tcb.snd_una, -1), ACK, now)


# ------------------------------------------------------------------ queueing
def send_goal(tcb: Tcb) -> int:
    """Largest segment to build: a whole TSO super-segment (a multiple of the MSS)
    on an offloading route, else one MSS."""
    mss = tcb.mss
    if not tcb.offload:
        return mss
    goal = tcb.config.tso_max
    return max(goal - goal % mss, mss)


def queue_data(tcb: Tcb, data: memoryview) -> None:
    """Append ``data`` to the write queue in buffers of up to one send goal.

    Few large buffers keep the per-segment Python work down: a buffer is one
    TSO super-segment when the route offloads, and it is cut at transmit time
    only if a window does not take all of it. Small writes get small buffers,
    so that an idle connection with a little unacknowledged data stays small.
    """
    goal = send_goal(tcb)
    pos = 0
    n = len(data)
    tail = tcb.write_queue.last
    # Buffers from send_head on are unsent: the tail may still grow up to the goal.
    if tail is not None and tcb.send_head is not None and not tail.tcp_flags & FIN:
        room = min(tail.tailroom, goal - len(tail))
        if room > 0:
            take = min(room, n)
            tail.put_data(data[:take])
            tail.end_seq = seq.add(tail.end_seq, take)
            pos = take
    # Data in an immutable bytes object is referenced, not copied: its only copy
    # is the one into each segment sent (emit).
    shared = isinstance(data.obj, bytes)
    while pos < n:
        take = min(goal, n - pos)
        if shared and take >= tcb.mss:
            # (a read-only view of the application's bytes: never written, on purpose)
            skb = SkBuff(take, 0, buf=data[pos:pos + take])  # type: ignore[arg-type]
            skb.tail = take
        else:
            skb = SkBuff(max(take, min(goal, 4096)))
            skb.put_data(data[pos:pos + take])
        skb.seq = seq.add(tcb.write_seq, pos)
        skb.end_seq = seq.add(skb.seq, take)
        tcb.write_queue.append(skb)
        if tcb.send_head is None:
            tcb.send_head = skb
        pos += take
    tcb.write_seq = seq.add(tcb.write_seq, n)


def queue_fin(tcb: Tcb) -> None:
    """Our FIN: the FIN flag on the last unsent buffer, or a buffer of its own."""
    tail = tcb.write_queue.last
    if tail is not None and tcb.send_head is not None and seq.ge(tail.seq, tcb.send_head.seq):
        tail.tcp_flags |= FIN
        tail.end_seq = seq.add(tail.end_seq, 1)
    else:
        skb = SkBuff(0)
        skb.seq = tcb.write_seq
        skb.end_seq = seq.add(tcb.write_seq, 1)
        skb.tcp_flags = FIN
        tcb.write_queue.append(skb)
        if tcb.send_head is None:
            tcb.send_head = skb
    tcb.write_seq = seq.add(tcb.write_seq, 1)


def split_skb(tcb: Tcb, skb: SkBuff, n: int) -> None:
    """Cut ``skb`` after ``n`` payload bytes; the rest (and any FIN) becomes a new
    buffer over the same memory (no copy)."""
    split_buffer(tcb.write_queue, skb, n)


# ------------------------------------------------------------------ pipe
def flight_size(tcb: Tcb) -> int:
    """Bytes sent and not cumulatively acknowledged (RFC 5681 FlightSize)."""
    return seq.sub(tcb.snd_nxt, tcb.snd_una)


def pipe(tcb: Tcb) -> int:
    """Bytes believed in the network (RFC 6675 SetPipe over the write_queue marks)."""
    if not tcb.in_recovery and not tcb.rto_recovery:
        return flight_size(tcb)
    total = 0
    for skb in tcb.write_queue:
        if skb is tcb.send_head:
            break
        n = seq.sub(skb.end_seq, skb.seq)
        if skb.sacked & SACKED:
            continue
        if not skb.sacked & LOST:
            total += n
        if skb.sacked & RETRANS:
            total += n
    if not tcb.sack_ok:
        # Without SACK each duplicate ACK stands for one segment that left the network.
        total -= tcb.dupacks * tcb.mss
    return max(total, 0)


# ------------------------------------------------------------------ transmission
def transmit(tcb: Tcb, first: SkBuff, last: SkBuff, plen: int, now: float) -> None:
    """Send the buffers first..last (contiguous) as one segment."""
    parts = []
    skb: SkBuff | None = first
    while True:
        assert skb is not None
        if len(skb):
            parts.append(skb.view())
        if skb is last:
            break
        skb = skb.next
    flags = ACK | (last.tcp_flags & FIN)
    if last.next is None or flags & FIN:
        flags |= PSH
    send_segment(tcb, first.seq, flags, now, parts=parts, plen=plen)


def retransmit(tcb: Tcb, skb: SkBuff, now: float) -> None:
    """Retransmit one buffer (RFC 9293 §3.8.1); Karn: its RTT is no longer measured."""
    transmit(tcb, skb, skb, len(skb), now)
    skb.sacked |= RETRANS
    skb.retrans += 1
    skb.when = now
    tcb.total_retrans += 1
    tcb.layer.counters["retransmits"] += 1


def path_mtu_changed(tcb: Tcb, mtu: int, now: float) -> str:
    """A smaller path MTU (RFC 1191): shrink the MSS, resend what no longer fits.

    Returns "ignored" (not below the path MTU in use), "clamped" (below
    :data:`PMTU_MIN`, taken as that) or "lowered". Sent buffers larger than the new
    MSS are cut to size and marked lost, then retransmitted as the congestion window
    allows; cwnd itself is not reduced, since this is no sign of congestion (as
    Linux's simple retransmit).
    """
    outcome = "lowered"
    fam = family_of(tcb.local)
    if mtu < fam.pmtu_min:
        # A forged "MTU 68" would make every segment tiny (RFC 5927 §7 describes the
        # attack). Linux takes anything below its min_pmtu (552) as 552; so do we.
        # (IPv6 never gets here with less than 1280: RFC 8201 §4, stack/ip6.py.)
        mtu, outcome = fam.pmtu_min, "clamped"
    if mtu >= tcb.pmtu:
        return "ignored"  # RFC 1191 §3: a host never raises its estimate on an ICMP
    tcb.pmtu = mtu
    # Linux then locks the path MTU and sends without DF: should the path really be
    # narrower than the floor, routers fragment rather than drop.
    tcb.pmtu_locked = outcome == "clamped"
    new = fam.tcp_mss(mtu) - (12 if tcb.ts_ok else 0)
    if new >= tcb.mss:
        return outcome  # the peer's MSS is the smaller limit already
    tcb.mss = new
    tcb.cc.set_mss(new)
    skb = tcb.write_queue.first
    marked = False
    while skb is not None and skb is not tcb.send_head:
        if len(skb) > new:
            skb.sacked = (skb.sacked | LOST) & ~(RETRANS | SACKED)
            split_skb(tcb, skb, new)  # the rest inherits the marks
            marked = True
        skb = skb.next
    if marked and not tcb.in_recovery:
        tcb.rto_recovery = True
        tcb.recover = tcb.snd_nxt
    push(tcb, now)
    return outcome


def retransmit_lost(tcb: Tcb, now: float, in_pipe: int) -> int:
    """Retransmit buffers marked LOST while the pipe allows (RFC 6675 NextSeg rule 1).

    Returns the pipe after the retransmissions (each one adds its length).
    """
    if not tcb.in_recovery and not tcb.rto_recovery:
        return in_pipe
    for skb in tcb.write_queue:
        if skb is tcb.send_head:
            break
        if skb.sacked & (SACKED | RETRANS) or not skb.sacked & LOST:
            continue
        n = seq.sub(skb.end_seq, skb.seq)
        if in_pipe + n > tcb.cc.cwnd:
            # A large buffer is cut to what cwnd takes (whole segments), so
            # that recovery with a small cwnd still moves one segment at a time.
            room = tcb.cc.cwnd - in_pipe
            room -= room % tcb.mss
            if 0 < room < len(skb):
                split_skb(tcb, skb, room)
                n = room
            elif skb is not tcb.write_queue.first:
                break
        retransmit(tcb, skb, now)
        in_pipe += n
    return in_pipe


def _nagle_holds(tcb: Tcb, plen: int, last: SkBuff) -> bool:
    """RFC 896 / RFC 9293 §3.7.4: hold a small segment while data is unacknowledged."""
    if plen >= tcb.mss or last.tcp_flags & FIN:
        return False
    if tcb.nodelay:
        return False
    return tcb.snd_nxt != tcb.snd_una


def _fit_first(tcb: Tcb, first: SkBuff, wnd_avail: int, cwnd_avail: int, in_pipe: int,
               cwnd: int, goal: int) -> bool | None:
    """Whether the buffer at send_head may leave as it is (True), was cut to what the
    windows take (None: look again) or must wait (False)."""
    mss = tcb.mss
    n = len(first)
    seg_len = seq.sub(first.end_seq, first.seq)
    if seg_len > wnd_avail and n > mss and wnd_avail >= mss:
        # The peer's window takes part of a large buffer: whole segments of it.
        split_skb(tcb, first, wnd_avail - wnd_avail % mss)
        return None
    if seg_len > wnd_avail:
        # Sender SWS avoidance (RFC 9293 §3.8.6.2.1): a partial segment only if it
        # is at least half the largest window the peer ever offered.
        if n > 0 and wnd_avail > 0 and wnd_avail >= tcb.max_snd_wnd // 2 and wnd_avail < n:
            split_skb(tcb, first, wnd_avail)
            return None
        return False
    if n > cwnd_avail:
        # cwnd takes only part of a large buffer. With data in flight, wait
        # for ACKs to open at least a third of cwnd (or a whole goal), as
        # Linux's TSO deferral does: cutting a piece per ACK would answer
        # every ACK with a small segment and keep the segments small for good.
        room = cwnd_avail - cwnd_avail % mss
        if in_pipe > 0 and room < min(goal, cwnd // 3):
            return False
        if 0 < room < n:
            split_skb(tcb, first, room)
            return None
        return False
    return True


def write_new(tcb: Tcb, now: float, in_pipe: int) -> None:
    """Send new data from ``send_head`` as windows, Nagle and SWS avoidance allow."""
    goal = send_goal(tcb)
    mss = tcb.mss
    cwnd = tcb.cc.cwnd
    if not tcb.in_recovery and not tcb.rto_recovery and tcb.dupacks:
        # Limited transmit (RFC 3042): each of the first two duplicate ACKs lets
        # one new segment out beyond cwnd, to keep the ACK clock running.
        cwnd += min(tcb.dupacks, 2) * tcb.mss
    while (first := tcb.send_head) is not None:
        if len(first) > goal:
            split_skb(tcb, first, goal)  # queued before the MSS shrank
        wnd_avail = seq.sub(seq.add(tcb.snd_una, tcb.snd_wnd), first.seq)
        cwnd_avail = cwnd - in_pipe
        fits = _fit_first(tcb, first, wnd_avail, cwnd_avail, in_pipe, cwnd, goal)
        if fits is None:
            continue
        if not fits:
            break
        n = len(first)
        last, plen = first, n
        room = min(wnd_avail - seq.sub(first.end_seq, first.seq), cwnd_avail - n, goal - n)
        while not last.tcp_flags & FIN and last.next is not None:
            nxt = last.next
            need = seq.sub(nxt.end_seq, nxt.seq)
            if need > room and plen < mss and 0 < room < len(nxt):
                split_skb(tcb, nxt, min(room, mss - plen))  # fill up a short segment
                continue
            if need > room:
                break
            last, plen, room = nxt, plen + len(nxt), room - need
        if _nagle_holds(tcb, plen, last):
            break
        transmit(tcb, first, last, plen, now)
        mark_sent(tcb, first, last, now)
        in_pipe += seq.sub(last.end_seq, first.seq)


def mark_sent(tcb: Tcb, first: SkBuff, last: SkBuff, now: float) -> None:
    """Bookkeeping after new data first..last left: send times, SND.NXT, timers."""
    skb: SkBuff | None = first
    while skb is not None:
        skb.when = now
        if skb is last:
            break
        skb = skb.next
    tcb.snd_nxt = last.end_seq
    tcb.send_head = last.next
    tcb.last_send = now
    tcb.persist_backoff = 0
    if tcb.timer_rtx is None or tcb.rtx_kind != "rtx":
        arm_rtx(tcb, now)


def arm_rtx(tcb: Tcb, now: float) -> None:
    """(Re)start the retransmission timer (RFC 6298 §5.1, §5.3), or in its place the
    loss probe timer where RFC 8985 §7.2 schedules one, or RACK's reordering timer
    (§6.3) when that is due first."""
    pto = rack.pto_delay(tcb)
    at, kind = (now + pto, "tlp") if pto is not None else (now + tcb.rtt.rto, "rtx")
    reo = tcb.rack_reo_at
    if reo is not None and reo < at:
        at, kind = max(reo, now), "reo"
    tcb.timer_rtx = at
    tcb.rtx_kind = kind


def push(tcb: Tcb, now: float) -> None:
    """Transmit whatever may be transmitted now and keep the timers right."""
    if tcb.state not in SENDING:
        return
    if tcb.snd_nxt == tcb.snd_una and tcb.send_head is not None and tcb.bytes_acked \
            and now - tcb.last_send > tcb.rtt.rto:
        tcb.cc.on_idle_restart(now)  # RFC 5681 §4.1
    in_pipe = retransmit_lost(tcb, now, pipe(tcb))
    write_new(tcb, now, in_pipe)
    update_persist(tcb, now)


def update_persist(tcb: Tcb, now: float) -> None:
    """Arm the persist timer when data waits on a closed window and nothing is in flight.

    RFC 9293 §3.8.6.1: probing keeps a zero window from deadlocking the connection.
    """
    if tcb.send_head is not None and tcb.snd_nxt == tcb.snd_una:
        if tcb.timer_rtx is None:
            shift = min(tcb.persist_backoff, 16)
            interval = min(tcb.rtt.rto * (1 << shift), tcb.config.max_rto)
            tcb.timer_rtx = now + interval
            tcb.rtx_kind = "persist"
    elif tcb.rtx_kind == "persist" and tcb.snd_nxt != tcb.snd_una:
        arm_rtx(tcb, now)


# ------------------------------------------------------------------ receive side
def autotune_rcvbuf(tcb: Tcb, now: float) -> None:
    """Grow the receive buffer when the application keeps up (like Linux's DRS).

    Once per round trip: if the application consumed more than half the buffer in
    that time, the buffer becomes twice what it consumed (up to rcvbuf_max).
    """
    if not tcb.config.rcvbuf_autotune or tcb.rcvbuf >= tcb.rcvbuf_limit:
        return
    interval = max(tcb.rtt.srtt or tcb.rcv_rtt or 0.1, 0.001)
    if now - tcb.autotune_start < interval:
        return
    copied = tcb.autotune_copied
    tcb.autotune_copied = 0
    tcb.autotune_start = now
    if 2 * copied > tcb.rcvbuf:
        tcb.rcvbuf = min(tcb.rcvbuf_limit, 2 * copied)
        tcb.layer.count("rcvbuf_grown")


def maybe_window_update(tcb: Tcb, now: float) -> None:
    """Send a window update when reading opened the window significantly.

    As Linux's tcp_cleanup_rbuf: when the advertised window is at most half the
    buffer and the free space is at least twice it (and one MSS more than it).
    """
    if tcb.state not in (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2):
        return
    cur = max(0, seq.sub(tcb.rcv_adv, tcb.rcv_nxt))
    if cur * 2 > tcb.rcvbuf:
        return
    free = min(rcv_space(tcb), 0xFFFF << tcb.rcv_wscale)
    # the same threshold as select_window's receiver SWS avoidance: a closed window
    # reopens (and is announced) as soon as one segment fits again
    if free >= 2 * cur and free - cur >= min(tcb.rcvbuf // 2, tcb.rcv_mss):
        # Due now, but sent from the timer: an application that reads and answers in
        # the same step (a request, a handshake) has its answer carry the new window,
        # and the separate ACK is never sent (send_segment clears the timer).
        if tcb.timer_delack is None or tcb.timer_delack > now:
            tcb.timer_delack = now


def schedule_ack(tcb: Tcb, now: float) -> None:
    """Delayed ACK (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2): send now or arm the timer."""
    # RFC 5681 §4.2: at least every second full-sized segment is acknowledged.
    if tcb.ack_now or seq.sub(tcb.rcv_nxt, tcb.last_ack_sent) > tcb.rcv_mss:
        send_ack(tcb, now)
        return
    if tcb.timer_delack is None:
        # An SRTT of 0.0 after a sample is a round trip below the 1 ms timestamp
        # granularity: the shortest delay, not the longest (which would match a
        # 200 ms minimum RTO and let the sender time out before our ACK leaves).
        ato = tcb.rtt.srtt / 2 if tcb.rtt.has_sample else tcb.config.delack_max
        ato = min(max(ato, tcb.config.delack_min), tcb.config.delack_max)
        tcb.timer_delack = now + ato
