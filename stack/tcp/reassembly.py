"""Receive-side reassembly: recv_queue and the bounded, sorted out_of_order_queue.

Segment text is trimmed to the receive window (RFC 9293 §3.10.7.4, seventh step),
in-order bytes go to ``recv_queue`` (one copy), bytes above RCV.NXT to
``out_of_order_queue``, where the data already held wins over overlapping new data
so that the queue stays sorted and non-overlapping (the source of SACK blocks,
RFC 2018 §4). Out-of-order arrivals and hole fills are acknowledged at once
(RFC 5681 §4.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack import seq
from stack.skbuff import SkBuff

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb


def receive_data(tcb: Tcb, seg_seq: int, payload: memoryview, fin: bool, now: float) -> bool:
    """Take the text of an acceptable segment; True when a FIN is now in order."""
    n = len(payload)
    off = seq.sub(tcb.rcv_nxt, seg_seq)
    if off > 0:
        tcb.ack_now = True  # duplicate data: the peer may have missed our ACK
        if off >= n:
            fin = fin and off == n
            payload = payload[:0]
        else:
            payload = payload[off:]
        seg_seq = tcb.rcv_nxt
    wnd = max(0, seq.sub(tcb.rcv_adv, tcb.rcv_nxt))
    over = seq.sub(seq.add(seg_seq, len(payload)), seq.add(tcb.rcv_nxt, wnd))
    if over > 0:
        tcb.layer.count("rcv_beyond_window")
        payload = payload[:max(len(payload) - over, 0)]
        fin = False
        tcb.ack_now = True  # tell the sender (a window probe, perhaps) where the window ends
    if seg_seq != tcb.rcv_nxt:
        tcb.ack_now = True
        if payload:
            ooo_insert(tcb, seg_seq, payload)
        if fin:
            tcb.ooo_fin = seq.add(seg_seq, len(payload))
        return False
    if payload:
        skb = _held(payload)
        skb.seq = seg_seq
        skb.end_seq = seq.add(seg_seq, len(payload))
        tcb.recv_queue.append(skb)
        tcb.rcv_queued += len(payload)
        tcb.bytes_received += len(payload)
        tcb.rcv_nxt = skb.end_seq
        tcb.rcv_mss = min(max(tcb.rcv_mss, len(payload)), tcb.adv_mss)
        tcb.post("readable")
    if tcb.out_of_order_queue:
        drain_ooo(tcb)
        tcb.ack_now = True  # a hole was (perhaps) filled: RFC 5681 §4.2
    if fin:
        return True
    if tcb.ooo_fin is not None and tcb.ooo_fin == tcb.rcv_nxt and not tcb.out_of_order_queue:
        tcb.ooo_fin = None
        return True
    return False


def _held(payload: memoryview) -> SkBuff:
    """A receive queue buffer over an immutable copy of ``payload`` (the one copy of
    received data): when the application takes the whole buffer, recv() hands it
    this very bytes object, without a second copy."""
    data = bytes(payload)
    skb = SkBuff(len(data), 0, buf=data)  # type: ignore[arg-type]  # read-only on purpose
    skb.tail = len(data)
    return skb


def ooo_insert(tcb: Tcb, start: int, payload: memoryview) -> None:
    """Insert [start, start+len) into the out_of_order_queue, keeping data already held."""
    cfg = tcb.config
    q = tcb.out_of_order_queue
    end = seq.add(start, len(payload))
    if tcb.ooo_bytes + len(payload) > cfg.ooo_max_bytes or q.qlen >= cfg.ooo_max_segments:
        tcb.layer.count("ooo_queue_full")
        return
    tcb.last_ooo = (start, end)
    base = start
    cur = start
    skb = q.first
    while skb is not None and seq.lt(cur, end):
        if seq.le(skb.end_seq, cur):
            skb = skb.next
            continue
        if seq.lt(cur, skb.seq):
            piece_end = seq.min_seq(end, skb.seq)
            _insert_piece(tcb, payload, base, cur, piece_end, before=skb)
        cur = seq.max_seq(cur, skb.end_seq)
        skb = skb.next
    if seq.lt(cur, end):
        _insert_piece(tcb, payload, base, cur, end, before=None)


def _insert_piece(tcb: Tcb, payload: memoryview, base: int, lo: int, hi: int,
                  before: SkBuff | None) -> None:
    piece = _held(payload[seq.sub(lo, base):seq.sub(hi, base)])
    piece.seq = lo
    piece.end_seq = hi
    if before is None:
        tcb.out_of_order_queue.append(piece)
    else:
        tcb.out_of_order_queue.insert_before(before, piece)
    tcb.ooo_bytes += len(piece)


def drain_ooo(tcb: Tcb) -> None:
    """Move buffers that became in order from the out_of_order_queue to recv_queue."""
    q = tcb.out_of_order_queue
    while (skb := q.first) is not None and seq.le(skb.seq, tcb.rcv_nxt):
        q.unlink(skb)
        tcb.ooo_bytes -= len(skb)
        if seq.le(skb.end_seq, tcb.rcv_nxt):
            continue
        skb.pull(seq.sub(tcb.rcv_nxt, skb.seq))
        skb.seq = tcb.rcv_nxt
        tcb.recv_queue.append(skb)
        tcb.rcv_queued += len(skb)
        tcb.bytes_received += len(skb)
        tcb.rcv_nxt = skb.end_seq
        tcb.post("readable")
    if not q:
        tcb.last_ooo = None
