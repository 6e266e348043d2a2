"""Selective acknowledgement: receiver blocks (RFC 2018, RFC 2883) and the
sender's scoreboard with loss recovery helpers (RFC 6675).

Both sides work on the TCB's queues of SkBuffs and their ``seq``/``end_seq``;
the sender keeps its per-segment state in ``skb.sacked`` (SACKED, LOST,
RETRANS). All sequence comparisons go through :mod:`stack.seq`.
"""

from __future__ import annotations

from collections.abc import Iterable

from stack import seq
from stack.skbuff import SkbQueue, SkBuff
from stack.wire.tcp import FIN

#: ``skb.sacked`` flags.
SACKED = 1
LOST = 2
RETRANS = 4

#: RFC 6675 §2: DupThresh.
DUPTHRESH = 3
#: Most blocks an option can carry (40 option bytes: 2 + 8*4 = 34).
MAX_SACK_BLOCKS = 4


def _merged_blocks(out_of_order_queue: SkbQueue) -> list[tuple[int, int]]:
    """Contiguous or overlapping buffers folded into ascending [start, end) blocks."""
    first = out_of_order_queue.peek()
    if first is None:
        return []
    base = first.seq
    # Offsets from the first buffer keep the sort correct across wrap-around and
    # tolerate a queue that is not perfectly ordered.
    spans = sorted((seq.sub(skb.seq, base), seq.sub(skb.end_seq, base))
                   for skb in out_of_order_queue if seq.lt(skb.seq, skb.end_seq))
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(seq.add(base, lo), seq.add(base, hi)) for lo, hi in merged]


def split_buffer(queue: SkbQueue, skb: SkBuff, n: int) -> SkBuff:
    """Cut ``skb`` (on ``queue``) after ``n`` of its payload bytes, without copying.

    The rest becomes a new buffer over the same bytearray, inserted right after
    ``skb``; it takes the FIN flag (if any) and the send state (time, marks).
    ``skb`` keeps its allocation but is never written to again: only the last
    buffer of a write queue grows, and the rest now comes after it.
    """
    if not 0 < n < skb.tail - skb.data:
        raise ValueError(f"cannot split a buffer of {skb.tail - skb.data} bytes at {n}")
    rest = SkBuff(skb.end, skb.data + n, buf=skb.buf)
    rest.head = rest.data
    rest.tail = skb.tail
    rest.seq = seq.add(skb.seq, n)
    rest.end_seq = skb.end_seq
    rest.tcp_flags = skb.tcp_flags
    rest.when, rest.retrans, rest.sacked = skb.when, skb.retrans, skb.sacked
    skb.tcp_flags &= ~FIN
    skb.tail = skb.data + n
    skb.end_seq = rest.seq
    queue.insert_after(skb, rest)
    return rest


def _overlaps(block: tuple[int, int], span: tuple[int, int]) -> bool:
    return seq.lt(block[0], span[1]) and seq.lt(span[0], block[1])


def sack_blocks(out_of_order_queue: SkbQueue, last: tuple[int, int] | None,
                max_blocks: int, *, dsack: tuple[int, int] | None = None
                ) -> list[tuple[int, int]]:
    """SACK blocks to send with the next ACK (RFC 2018 §4).

    The block holding the most recently received segment ``last`` comes first
    (RFC 2018 §4: "the first SACK block MUST specify the contiguous block of data
    containing the segment which triggered this ACK"), then the others in
    ascending sequence order, at most ``max_blocks`` in all. A ``dsack`` range
    (RFC 2883 §4: a duplicate that arrived) goes in front of everything.
    """
    if max_blocks <= 0:
        return []
    blocks = _merged_blocks(out_of_order_queue)
    out: list[tuple[int, int]] = []
    if dsack is not None and seq.lt(dsack[0], dsack[1]):
        out.append(dsack)
    if last is not None:
        for i, block in enumerate(blocks):
            if _overlaps(block, last):
                out.append(blocks.pop(i))
                break
    out.extend(blocks)
    return out[:max_blocks]


def _seg_count(length: int, mss: int) -> int:
    """How many MSS-sized segments a buffer stands for (a TSO buffer is several)."""
    return max(1, -(-length // mss)) if mss > 0 else 1


class Scoreboard:
    """Sender-side SACK state (RFC 6675 §3-§4) kept on the write_queue buffers.

    ``highest_sacked`` is the end (exclusive) of the highest SACKed data, or None.
    Malformed blocks and D-SACKs (RFC 2883) are counted, never trusted.
    """

    __slots__ = ("highest_sacked", "dsacks", "invalid_blocks")

    def __init__(self) -> None:
        self.highest_sacked: int | None = None
        #: Blocks wholly below snd_una: duplicate reports (RFC 2883 §4).
        self.dsacks = 0
        #: Empty blocks or blocks reaching beyond snd_nxt: ignored (RFC 6675 §5).
        self.invalid_blocks = 0

    def reset(self, write_queue: SkbQueue | None = None) -> None:
        """Forget all SACK state; with a queue, clear the flags of its buffers too."""
        self.highest_sacked = None
        if write_queue is not None:
            for skb in write_queue:
                skb.sacked = 0

    def _valid_blocks(self, snd_una: int, snd_nxt: int,
                      blocks: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        valid = []
        for start, end in blocks:
            if not seq.lt(start, end) or seq.gt(end, snd_nxt):
                self.invalid_blocks += 1
            elif seq.le(end, snd_una):
                self.dsacks += 1
            else:
                valid.append((seq.max_seq(start, snd_una), end))
        return valid

    def update(self, write_queue: SkbQueue, snd_una: int, blocks: list[tuple[int, int]],
               snd_nxt: int | None = None, delivered: list[SkBuff] | None = None) -> int:
        """Mark buffers wholly covered by a valid block SACKED; return newly SACKed bytes.

        ``snd_nxt`` defaults to the end of the last buffer in the queue (when the
        queue holds only sent data). Newly SACKed buffers are appended to
        ``delivered`` when given (for RACK, RFC 8985 §6.2).
        """
        if snd_nxt is None:
            tail = write_queue.peek_tail()
            snd_nxt = tail.end_seq if tail is not None else snd_una
        valid = self._valid_blocks(snd_una, snd_nxt, blocks)
        if self.highest_sacked is not None and seq.le(self.highest_sacked, snd_una):
            self.highest_sacked = None
        if not valid:
            return 0
        newly = 0
        skb = write_queue.first
        while skb is not None:
            cur, skb = skb, skb.next
            if seq.ge(cur.seq, snd_nxt):
                break
            if cur.sacked & SACKED or seq.le(cur.end_seq, snd_una):
                continue
            # A block edge inside a (TSO-sized) buffer: cut it there, so that the
            # SACKed part is marked and the rest stays a candidate for loss.
            self._cut_at_edges(write_queue, cur, valid)
            skb = cur.next
            for start, end in valid:
                if seq.le(start, cur.seq) and seq.le(cur.end_seq, end):
                    cur.sacked = (cur.sacked | SACKED) & ~LOST
                    newly += seq.sub(cur.end_seq, cur.seq)
                    if delivered is not None:
                        delivered.append(cur)
                    if self.highest_sacked is None or seq.gt(cur.end_seq, self.highest_sacked):
                        self.highest_sacked = cur.end_seq
                    break
        return newly

    @staticmethod
    def _cut_at_edges(write_queue: SkbQueue, skb: SkBuff,
                      valid: list[tuple[int, int]]) -> None:
        """Split ``skb`` at the first block edge strictly inside its payload."""
        lo, hi = skb.seq, seq.add(skb.seq, skb.tail - skb.data)
        for start, end in valid:
            for edge in (start, end):
                if seq.lt(lo, edge) and seq.lt(edge, hi):
                    split_buffer(write_queue, skb, seq.sub(edge, lo))
                    return

    @staticmethod
    def is_lost(skb: SkBuff, mss: int) -> bool:
        """RFC 6675 IsLost: DupThresh SACKed segments, or more than
        (DupThresh - 1) * SMSS SACKed bytes, above ``skb`` (which must be on its queue)."""
        segs = nbytes = 0
        nxt = skb.next
        while nxt is not None:
            if nxt.sacked & SACKED:
                length = seq.sub(nxt.end_seq, nxt.seq)
                segs += _seg_count(length, mss)
                nbytes += length
                if segs >= DUPTHRESH or nbytes > (DUPTHRESH - 1) * mss:
                    return True
            nxt = nxt.next
        return False

    def mark_lost(self, write_queue: SkbQueue, snd_una: int, mss: int) -> int:
        """Flag LOST every unSACKed buffer that IsLost says is lost; return newly lost bytes."""
        segs = nbytes = newly = 0
        for skb in write_queue.reversed():
            if seq.le(skb.end_seq, snd_una):
                break
            length = seq.sub(skb.end_seq, skb.seq)
            if skb.sacked & SACKED:
                segs += _seg_count(length, mss)
                nbytes += length
            elif segs >= DUPTHRESH or nbytes > (DUPTHRESH - 1) * mss:
                if not skb.sacked & LOST:
                    skb.sacked |= LOST
                    newly += length
        return newly

    def mark_all_lost(self, write_queue: SkbQueue, snd_nxt: int) -> None:
        """After a retransmission timeout every sent, unSACKed buffer is lost and
        earlier retransmissions no longer count (RFC 6675 §5.1 hands over to RTO recovery)."""
        for skb in write_queue:
            if seq.ge(skb.seq, snd_nxt):
                break
            if not skb.sacked & SACKED:
                skb.sacked = (skb.sacked | LOST) & ~RETRANS

    def pipe(self, write_queue: SkbQueue, snd_nxt: int, mss: int,
             snd_una: int | None = None) -> int:
        """RFC 6675 SetPipe in bytes: sent, unSACKed data not deemed lost, plus
        retransmitted data. ``snd_una`` (optional) excludes a partly acked head."""
        segs = nbytes = pipe = 0
        for skb in write_queue.reversed():
            if seq.ge(skb.seq, snd_nxt):
                continue
            lo = skb.seq
            if snd_una is not None:
                if seq.le(skb.end_seq, snd_una):
                    break
                lo = seq.max_seq(lo, snd_una)
            length = seq.sub(seq.min_seq(skb.end_seq, snd_nxt), lo)
            if skb.sacked & SACKED:
                full = seq.sub(skb.end_seq, skb.seq)
                segs += _seg_count(full, mss)
                nbytes += full
                continue
            lost = skb.sacked & LOST or segs >= DUPTHRESH or nbytes > (DUPTHRESH - 1) * mss
            if not lost:
                pipe += length
            if skb.sacked & RETRANS:
                pipe += length
        return pipe

    def next_seg(self, write_queue: SkbQueue, snd_nxt: int, mss: int, *,
                 rule3: bool = True) -> SkBuff | None:
        """RFC 6675 NextSeg on already-sent data: the buffer to retransmit, or None.

        Rule 1: the first unSACKed buffer not yet retransmitted (above HighRxt),
        below the highest SACKed data, that IsLost. Rule 2 (new data) is the
        caller's; pass ``rule3=False`` when it can send new data. Rule 3: the
        first unSACKed, unretransmitted buffer below the highest SACKed data.
        The caller sets RETRANS on the buffer when it retransmits it.
        """
        segs = nbytes = 0
        seen_sacked = False
        rule1_skb = rule3_skb = None
        for skb in write_queue.reversed():
            if seq.ge(skb.seq, snd_nxt):
                continue
            if skb.sacked & SACKED:
                length = seq.sub(skb.end_seq, skb.seq)
                segs += _seg_count(length, mss)
                nbytes += length
                seen_sacked = True
                continue
            if not seen_sacked or skb.sacked & RETRANS:
                continue
            rule3_skb = skb
            if skb.sacked & LOST or segs >= DUPTHRESH or nbytes > (DUPTHRESH - 1) * mss:
                rule1_skb = skb
        if rule1_skb is not None:
            return rule1_skb
        return rule3_skb if rule3 else None
