"""SACK: receiver blocks (RFC 2018/2883) and the RFC 6675 scoreboard."""

from hypothesis import given
from hypothesis import strategies as st

from stack import seq
from stack.skbuff import SkbQueue, SkBuff
from stack.tcp.sack import LOST, RETRANS, SACKED, Scoreboard, sack_blocks

MSS = 100


def _queue(spans, sacked=None):
    q = SkbQueue()
    for i, (s, e) in enumerate(spans):
        skb = SkBuff(0)
        skb.seq, skb.end_seq = s & seq.MASK, e & seq.MASK
        if sacked:
            skb.sacked = sacked[i]
        q.append(skb)
    return q


def _segments(base, n, size=MSS):
    return [(base + i * size, base + (i + 1) * size) for i in range(n)]


# -- receiver ---------------------------------------------------------------

def test_blocks_merge_contiguous_and_put_latest_first():
    q = _queue([(100, 200), (200, 300), (500, 600), (800, 900)])
    assert sack_blocks(q, (500, 600), 4) == [(500, 600), (100, 300), (800, 900)]
    assert sack_blocks(q, (200, 300), 4) == [(100, 300), (500, 600), (800, 900)]
    assert sack_blocks(q, None, 2) == [(100, 300), (500, 600)]
    assert sack_blocks(q, (800, 900), 1) == [(800, 900)]
    assert sack_blocks(SkbQueue(), (1, 2), 3) == []
    assert sack_blocks(q, (800, 900), 0) == []


def test_blocks_across_wraparound():
    top = seq.MOD - 100
    q = _queue([(top, top + 100), (0, 50), (200, 300)])
    assert sack_blocks(q, (200, 300), 3) == [(200, 300), (top, 50)]


def test_dsack_goes_first():
    q = _queue([(500, 600)])
    assert sack_blocks(q, (500, 600), 3, dsack=(100, 200)) == [(100, 200), (500, 600)]


@given(st.integers(0, seq.MASK),
       st.lists(st.tuples(st.integers(0, 40), st.integers(1, 5)), min_size=1, max_size=30),
       st.integers(1, 4), st.data())
def test_blocks_properties(base, gaps, max_blocks, data):
    spans, pos = [], base
    for gap, length in gaps:
        pos += gap * 10
        spans.append((pos, pos + length * 10))
        pos += length * 10
    q = _queue(spans)
    last = data.draw(st.sampled_from(spans))
    blocks = sack_blocks(q, last, max_blocks)
    assert 1 <= len(blocks) <= max_blocks
    # the first block holds the latest segment
    assert seq.le(blocks[0][0], last[0] & seq.MASK)
    assert seq.le(last[1] & seq.MASK, blocks[0][1])
    for i, a in enumerate(blocks):
        assert seq.lt(a[0], a[1])
        for b in blocks[i + 1:]:
            # neither overlapping nor touching (touching would have been merged)
            assert seq.lt(a[1], b[0]) or seq.lt(b[1], a[0])
    # every byte of every queued buffer is covered when there is room for all
    all_blocks = sack_blocks(q, None, 1000)
    for s, e in spans:
        assert any(seq.le(b0, s & seq.MASK) and seq.le(e & seq.MASK, b1) for b0, b1 in all_blocks)


# -- sender -----------------------------------------------------------------

def test_update_marks_whole_buffers_and_ignores_bad_blocks():
    q = _queue(_segments(1000, 10))  # 1000..2000
    sb = Scoreboard()
    n = sb.update(q, 1000, [(1300, 1500), (1550, 1700)])
    assert n == 300  # 1300-1500 and 1600-1700; 1500-1600 is only half covered
    assert [bool(s.sacked & SACKED) for s in q] == [False] * 3 + [True] * 2 + [False, True] + [False] * 3
    assert sb.highest_sacked == 1700
    assert sb.update(q, 1000, [(1300, 1500)]) == 0  # not new
    assert sb.update(q, 1000, [(500, 900)]) == 0 and sb.dsacks == 1
    assert sb.update(q, 1000, [(1900, 2100)]) == 0 and sb.invalid_blocks == 1
    assert sb.update(q, 1000, [(1800, 1800)]) == 0 and sb.invalid_blocks == 2


def test_is_lost_thresholds():
    q = _queue(_segments(0, 6), [0, SACKED, SACKED, 0, SACKED, 0])
    first, second = list(q)[:2]
    assert Scoreboard.is_lost(first, MSS)  # three SACKed segments above
    q2 = _queue([(0, 100), (100, 350)], [0, SACKED])
    # one SACKed buffer of 250 bytes > (DupThresh-1)*SMSS = 200
    assert Scoreboard.is_lost(q2.peek(), MSS)
    q3 = _queue([(0, 100), (100, 300)], [0, SACKED])
    assert not Scoreboard.is_lost(q3.peek(), MSS)  # 200 bytes is not more than 200
    assert not Scoreboard.is_lost(list(q)[3], MSS)  # only one SACKed above


def test_mark_lost_pipe_and_next_seg():
    # segments 0..9 of 100 bytes; SACKed: 3, 5, 6, 7
    flags = [0, 0, 0, SACKED, 0, SACKED, SACKED, SACKED, 0, 0]
    q = _queue(_segments(0, 10), flags)
    sb = Scoreboard()
    assert sb.mark_lost(q, 0, MSS) == 400  # 0, 1, 2 and 4 have 3 SACKed segments above
    skbs = list(q)
    assert [bool(s.sacked & LOST) for s in skbs] == [True] * 3 + [False, True] + [False] * 5
    # pipe: not lost and unSACKed = 8, 9 -> 200 bytes
    assert sb.pipe(q, 1000, MSS) == 200
    nxt = sb.next_seg(q, 1000, MSS)
    assert nxt is skbs[0]
    for s in skbs[:3]:
        s.sacked |= RETRANS
    assert sb.pipe(q, 1000, MSS) == 500  # plus three retransmissions
    assert sb.next_seg(q, 1000, MSS) is skbs[4]
    skbs[4].sacked |= RETRANS
    # rule 1 exhausted; nothing unSACKed below the highest SACK left for rule 3
    assert sb.next_seg(q, 1000, MSS) is None


def test_next_seg_rule3():
    q = _queue(_segments(0, 4), [0, SACKED, 0, 0])
    sb = Scoreboard()
    skbs = list(q)
    # only one SACKed segment: nothing IsLost, rule 3 offers the first hole
    assert sb.next_seg(q, 400, MSS) is skbs[0]
    assert sb.next_seg(q, 400, MSS, rule3=False) is None
    # segments above the highest SACK are never offered
    skbs[0].sacked |= RETRANS
    assert sb.next_seg(q, 400, MSS) is None


def test_rule3_retransmission_counts_twice():
    # RFC 6675 SetPipe: a not-lost segment that was retransmitted is in the
    # network twice (steps a and b), so pipe may exceed FlightSize here.
    q = _queue(_segments(0, 2), [RETRANS, 0])
    assert Scoreboard().pipe(q, 200, MSS) == 300


def test_mark_all_lost_and_reset():
    q = _queue(_segments(0, 3), [RETRANS, SACKED, 0])
    sb = Scoreboard()
    sb.highest_sacked = 200
    sb.mark_all_lost(q, 300)
    assert [s.sacked for s in q] == [LOST, SACKED, LOST]
    assert sb.pipe(q, 300, MSS) == 0
    sb.reset(q)
    assert sb.highest_sacked is None and all(s.sacked == 0 for s in q)
    assert sb.pipe(q, 300, MSS) == 300


@given(st.integers(0, seq.MASK), st.lists(st.integers(1, 4), min_size=1, max_size=25),
       st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 3000)), max_size=6),
       st.integers(0, 3000), st.integers(0, 3000), st.booleans())
def test_scoreboard_properties(base, sizes, raw_blocks, una_off, nxt_off, retransmit):
    spans, pos = [], 0
    for n in sizes:
        spans.append((base + pos, base + pos + n * MSS))
        pos += n * MSS
    q = _queue(spans)
    snd_una = seq.add(base, min(una_off, pos) // MSS * MSS)
    snd_nxt = seq.add(base, pos)
    flight = seq.sub(snd_nxt, snd_una)
    while q.peek() is not None and seq.le(q.peek().end_seq, snd_una):
        q.pop()  # the core frees acknowledged buffers
    sb = Scoreboard()
    blocks = [(seq.add(base, a), seq.add(base, b)) for a, b in raw_blocks]
    sacked = sb.update(q, snd_una, blocks, snd_nxt)
    assert 0 <= sacked <= flight
    sb.mark_lost(q, snd_una, MSS)
    if retransmit:
        while (skb := sb.next_seg(q, snd_nxt, MSS, rule3=False)) is not None:
            skb.sacked |= RETRANS
    p = sb.pipe(q, snd_nxt, MSS, snd_una)
    assert 0 <= p <= flight
    assert p <= flight - sacked
    if sb.highest_sacked is not None:
        assert seq.le(sb.highest_sacked, snd_nxt) and seq.gt(sb.highest_sacked, snd_una)
