"""TIME-WAIT as a small record (stack/tcp/timewait.py): the table holds a TimeWait in
place of the Tcb, and it does everything a TIME-WAIT TCB did (RFC 9293 §3.10.7.4)."""

from __future__ import annotations

import gc
import weakref

import pytest
from harness import A, B
from peer import Peer

from apps.stat import connection_lines
from stack import seq as sq
from stack.control import connection_row
from stack.tcp.api import TcpConfig, TcpState
from stack.tcp.timewait import TimeWait
from stack.wire.tcp import ACK, FIN, RST, SYN

S = TcpState
KEY = (A, 80, B, 5000)


def time_wait(p: Peer, *, port: int = 80):
    """An accepted connection closed by us first: TIME-WAIT at t=1.2; (tcb, final ACK)."""
    _, tcb, _ = p.accept_connection(port=port)
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    (last_ack,) = p.send(FIN | ACK, now=1.2)
    assert tcb.state is S.TIME_WAIT
    return tcb, last_ack


def test_the_table_holds_a_small_record_not_the_tcb():
    p = Peer()
    tcb, _ = time_wait(p)
    tw = p.layer.connections[KEY]
    assert type(tw) is TimeWait and tw.state is S.TIME_WAIT
    assert not hasattr(tw, "__dict__")
    assert (tw.snd_nxt, tw.rcv_nxt) == (tcb.snd_nxt, tcb.rcv_nxt)
    assert tw.ts_ok and tw.ts_recent == tcb.ts_recent and tw.ts_offset == tcb.ts_offset
    assert not tcb.hashed and tcb not in p.layer.connections.values()


def test_a_tcb_nobody_holds_is_freed_while_its_record_stays():
    p = Peer()
    tcb, _ = time_wait(p)
    ref = weakref.ref(tcb)
    del tcb
    p.tick(5.0)  # stale timer entries of the old TCB leave the heap
    gc.collect()
    assert ref() is None
    assert type(p.layer.connections[KEY]) is TimeWait


def test_the_record_answers_like_the_tcb_did():
    p = Peer()
    tcb, last_ack = time_wait(p)
    del tcb
    gc.collect()
    # RFC 9293 §3.10.7.4: a retransmitted FIN is acknowledged again, 2*MSL restarts
    (again,) = p.send(FIN | ACK, seq=1001, advance=False, now=30.0)
    h0, h1 = last_ack.hdr, again.hdr
    assert (h1.flags, h1.seq, h1.ack, h1.window) == (h0.flags, h0.seq, h0.ack, h0.window)
    assert h1.options.timestamp[1] == h0.options.timestamp[1]  # TS.Recent echoed
    assert h1.options.timestamp[0] - h0.options.timestamp[0] == int(30.0 * 1000) - 1200
    assert p.layer.next_deadline() == pytest.approx(90.0)
    # another segment (an old duplicate ACK) is acknowledged
    assert [o.flags for o in p.send(ACK, seq=900, advance=False, now=31.0)] == [ACK]
    p.tick(89.9)
    assert KEY in p.layer.connections
    p.tick(90.0)
    assert not p.layer.connections


def test_paws_rejects_an_old_timestamp_with_an_ack():
    p = Peer()
    time_wait(p)
    out = p.send(ACK, tsval=1, advance=False, now=2.0)
    assert [o.flags for o in out] == [ACK] and p.layer.counters["paws_reject"] == 1


def test_rst_in_window_challenges_and_an_exact_rst_ends_time_wait():
    p = Peer()
    tcb, _ = time_wait(p)
    events: list[str] = []
    tcb.on_event = lambda _t, ev: events.append(ev)
    out = p.send(RST, seq=sq.add(p.seq, 10), advance=False, now=2.0)
    assert [o.flags for o in out] == [ACK] and p.layer.counters["challenge_ack"] == 1
    assert KEY in p.layer.connections
    assert p.send(RST, advance=False, now=2.1) == []
    assert p.layer.counters["rst_received"] == 1 and not p.layer.connections
    assert tcb.state is S.CLOSED and events == ["closed"]


def test_syn_in_window_gets_a_challenge_ack_without_a_listener():
    p = Peer()
    lst, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(FIN | ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    lst.close(1.2)
    out = p.send(SYN, seq=sq.add(p.seq, 100), advance=False, now=2.0, **p.syn_options())
    assert [o.flags for o in out] == [ACK] and p.layer.counters["syn_in_window"] == 1
    assert type(p.layer.connections[KEY]) is TimeWait


def test_a_syn_with_a_newer_timestamp_reopens_an_older_one_does_not():
    p = Peer()
    tcb, _ = time_wait(p)
    # RFC 6191: with timestamps the TSval decides, even for a higher sequence number
    out = p.send(SYN, seq=900000, advance=False, now=2.0,
                 **dict(p.syn_options(), timestamp=(p.tsval - 50, 0)))
    assert [o.flags for o in out] == [ACK] and tcb.state is S.TIME_WAIT
    p.tsval += 1000
    out = p.send(SYN, seq=5, advance=False, now=3.0, **p.syn_options())
    assert [(o.flags, o.hdr.ack) for o in out] == [(SYN | ACK, 6)]
    assert tcb.state is S.CLOSED and p.layer.counters["time_wait_reused"] == 1
    assert p.layer.connections[KEY].state is S.SYN_RECEIVED


def test_new_data_for_a_closed_tcb_draws_a_rst():
    p = Peer()
    tcb, _ = time_wait(p)
    tcb.close(1.5)  # the application lets go: nobody will read any more
    out = p.send(ACK, b"late", now=2.0)
    assert [o.flags for o in out] == [RST | ACK] and not p.layer.connections
    assert p.layer.counters["data_after_close"] == 1


def test_aborting_the_tcb_in_time_wait_ends_its_record():
    p = Peer()
    tcb, _ = time_wait(p)
    tcb.abort(2.0)
    assert tcb.state is S.CLOSED and not p.layer.connections


def test_the_bound_recycles_the_oldest_records():
    p = Peer(TcpConfig(max_time_wait=2))
    tcbs = [time_wait(p, port=80 + i)[0] for i in range(3)]
    assert [t.state for t in tcbs] == [S.CLOSED, S.TIME_WAIT, S.TIME_WAIT]
    assert p.layer.counters["time_wait_recycled"] == 1
    assert all(type(c) is TimeWait for c in p.layer.connections.values())


def test_stat_lists_the_record_in_time_wait():
    p = Peer()
    time_wait(p)
    row = connection_row(p.layer.connections[KEY])
    assert row["state"] == "TIME_WAIT" and row["local_port"] == 80
    assert row["remote_port"] == 5000 and row["unacked"] == 0
    lines = connection_lines({"connections": [row], "connections_matched": 1})
    assert lines[2].split() == ["TIME_WAIT", "198.18.0.1:80", "198.18.0.2:5000"]
    assert "rtt:-/- rto:-" in lines[3] and "timestamps" in lines[3]


def test_icmp_about_a_time_wait_connection_is_out_of_window():
    p = Peer()
    tcb, _ = time_wait(p)
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 3.0, mtu=1000, seg_seq=tcb.snd_nxt)
    assert p.layer.counters["icmp_out_of_window"] == 1 and KEY in p.layer.connections



def test_a_tcb_lent_to_an_input_hook_keeps_its_whole_time_wait():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    seen: list[int] = []

    def hook(t, hdr, skb, now) -> bool:
        seen.append(hdr.flags)
        return False  # TCP goes on with the segment

    tcb.input_hook = hook
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(FIN | ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    assert tcb.state is S.TIME_WAIT and p.layer.connections[KEY] is tcb
    (again,) = p.send(FIN | ACK, seq=1001, advance=False, now=2.0)
    assert again.flags == ACK and seen == [FIN | ACK, FIN | ACK]
    p.tick(70.0)
    assert tcb.state is S.CLOSED and not p.layer.connections
