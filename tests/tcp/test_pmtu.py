"""Hostile MSS and path MTU values: floors for the send MSS and the path MTU
(RFC 9293 §3.7.1, RFC 6691, RFC 1191), and RFC 5927 §4.1's check of ICMP errors."""

from __future__ import annotations

import pytest
from harness import A, B
from peer import Peer

from stack import seq as sq
from stack.tcp.api import TcpConfig
from stack.tcp.output import PMTU_MIN
from stack.wire.tcp import ACK, SYN

MSS_MIN = TcpConfig().mss_min


@pytest.mark.parametrize("ts", [True, False], ids=["ts", "nots"])
@pytest.mark.parametrize("peer_mss", [0, 1, 64, MSS_MIN - 1])
@pytest.mark.parametrize("opener", ["passive", "active"])
def test_a_tiny_peer_mss_gives_the_floor(opener, peer_mss, ts):
    p = Peer(ts=ts, mss=peer_mss)
    tcb = p.accept_connection()[1] if opener == "passive" else p.open_connection()[0]
    floor = MSS_MIN - (12 if ts else 0)  # the options every segment carries come off it
    assert tcb.mss == floor
    tcb.send(b"x" * (3 * floor), 1.0)
    assert {len(s.payload) for s in p.take()} == {floor}


def test_a_peer_mss_above_the_floor_is_honoured():
    p = Peer(ts=False, mss=MSS_MIN + 100)
    _, tcb, _ = p.accept_connection()
    assert tcb.mss == MSS_MIN + 100


def test_mss_min_is_a_setting():
    p = Peer(TcpConfig(mss_min=48), ts=False, mss=1)
    _, tcb, _ = p.accept_connection()
    assert tcb.mss == 48


@pytest.mark.parametrize("peer_mss", [0, 1])
def test_a_tiny_peer_mss_on_the_syn_cookie_path_gives_the_floor(peer_mss):
    p = Peer(TcpConfig(syn_backlog=0), ts=False, mss=peer_mss)
    lst = p.layer.listen(A, 80)
    (synack,) = p.send(SYN, now=0.0, **p.syn_options())
    assert p.layer.counters["syncookies_sent"] == 1
    p.ack = sq.add(synack.hdr.seq, 1)
    p.send(ACK, now=0.1)
    tcb = lst.accept()
    assert tcb is not None and tcb.mss == MSS_MIN


def _established_with_data(mss: int = 1460) -> tuple[Peer, object]:
    p = Peer(mss=mss)
    _, tcb, _ = p.accept_connection()
    tcb.send(b"m" * 5000, 1.0)
    assert p.take()
    return p, tcb


def test_frag_needed_with_mtu_68_is_clamped_to_the_floor():
    p, tcb = _established_with_data()
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=68, seg_seq=tcb.snd_una)
    assert tcb.mss == PMTU_MIN - 40 - 12
    assert p.layer.counters["icmp_pmtu_clamped"] == 1
    assert all(len(s.payload) <= PMTU_MIN - 40 - 12 for s in p.take())


def test_segments_after_a_clamp_may_be_fragmented_and_not_before():
    # Linux locks a path MTU it raised to min_pmtu and stops setting DF on that
    # path: should the path really be narrower, routers fragment instead of dropping.
    p, tcb = _established_with_data()
    tcb.send(b"n" * 100, 1.01)
    assert all(s.df for s in p.take())
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.02, mtu=1200, seg_seq=tcb.snd_una)
    assert all(s.df for s in p.take())  # an ordinary smaller path MTU keeps DF
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=68, seg_seq=tcb.snd_una)
    out = p.take()
    assert out and not any(s.df for s in out)


def test_frag_needed_at_the_floor_leaves_a_clamped_connection_alone():
    p, tcb = _established_with_data()
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=100, seg_seq=tcb.snd_una)
    mss = tcb.mss
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.06, mtu=68, seg_seq=tcb.snd_una)
    assert tcb.mss == mss == PMTU_MIN - 40 - 12


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_frag_needed_not_below_the_current_path_mtu_is_ignored(mtu):
    p, tcb = _established_with_data()
    before = tcb.mss
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=mtu, seg_seq=tcb.snd_una)
    assert tcb.mss == before
    assert p.layer.counters["icmp_pmtu_ignored"] == 1
    assert p.layer.counters["icmp_frag_needed"] == 0


@pytest.mark.parametrize("where", ["before_una", "at_nxt", "far"])
def test_frag_needed_quoting_a_sequence_outside_the_flight_is_ignored(where):
    p, tcb = _established_with_data()
    before = tcb.mss
    seg_seq = {"before_una": sq.add(tcb.snd_una, -1), "at_nxt": tcb.snd_nxt,
               "far": sq.add(tcb.snd_una, 1 << 30)}[where]
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=68, seg_seq=seg_seq)
    assert tcb.mss == before and p.take() == []
    assert p.layer.counters["icmp_out_of_window"] == 1
