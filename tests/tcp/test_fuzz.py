"""Hostile input: random segments and bytes never crash the layer and never break bounds."""

from __future__ import annotations

from harness import A, B, seg
from hypothesis import given, settings
from hypothesis import strategies as st
from peer import Peer

from stack import seq as sq
from stack.skbuff import SkBuff
from stack.tcp.api import TcpConfig, TcpState
from stack.wire.errors import WireError
from stack.wire.tcp import ACK, FIN

u32 = st.integers(0, 2**32 - 1)

segments = st.lists(st.tuples(
    st.integers(0, 0xFF),                                   # flags
    st.one_of(u32, st.integers(-3000, 70000)),               # seq (absolute or offset)
    st.one_of(u32, st.integers(-3000, 70000)),               # ack (absolute or offset)
    st.integers(0, 0xFFFF),                                  # window
    st.binary(max_size=3000),                                # payload
    st.one_of(st.none(), st.tuples(u32, u32)),               # timestamp
    st.lists(st.tuples(u32, u32), max_size=3),               # SACK blocks
    st.one_of(st.none(), st.integers(0, 0xFFFF)),            # MSS
), max_size=30)


def _abs(base: int, v: int) -> int:
    return sq.add(base, v) if v < 70001 and v > -3001 else v


def _connection(p: Peer, start: str):
    if start == "syn_sent":
        tcb, _ = p.layer.connect(B, 5000, 0.0, sport=80), p.take()
        p.ack = 0
        return tcb
    _, tcb, _ = p.accept_connection()
    tcb.send(b"d" * 5000, 1.0)
    if start == "fin_wait_1":
        tcb.shutdown_write(1.0)
    elif start == "close_wait":
        p.send(FIN | ACK, now=1.0)
    p.take()
    return tcb


@settings(max_examples=150, deadline=None)
@given(segments, st.booleans(),
       st.sampled_from(["established", "fin_wait_1", "close_wait", "syn_sent"]))
def test_random_segments_on_a_connection(segs, to_connection, start):
    p = Peer(TcpConfig(ooo_max_bytes=20000, ooo_max_segments=16))
    tcb = _connection(p, start)
    now = 1.0
    for flags, s, a, win, payload, ts, sack, mss in segs:
        now += 0.01
        opts = {"sack_blocks": tuple(sack)} if sack else {}
        if ts is not None:
            opts["timestamp"] = ts
        if mss is not None:
            opts["mss"] = mss
        try:
            skb = seg(5000, 80 if to_connection else 81, _abs(tcb.rcv_nxt, s),
                      _abs(tcb.snd_una, a), flags, win, payload, **opts)
        except WireError:  # too many options for one header: not a segment at all
            continue
        p.layer.input(skb, B, A, now)
        p.tick(now)
        assert tcb.ooo_bytes <= 20000 and len(tcb.out_of_order_queue) <= 16
        assert tcb.rcv_queued == sum(len(b) for b in tcb.recv_queue)
        if tcb.state is TcpState.CLOSED:
            break
    p.tick(now + 500.0)
    p.take()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=20))
def test_random_bytes_are_dropped_and_counted(blobs):
    p = Peer()
    p.layer.listen(A, 80)
    for b in blobs:
        skb = SkBuff.from_bytes(b)
        skb.vnet_flags = 2  # claim a valid checksum so that the parser sees everything
        p.layer.input(skb, B, A, 0.5)
    assert sum(p.layer.counters.values()) >= len(blobs)
