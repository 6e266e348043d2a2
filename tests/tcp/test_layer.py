"""Layer-level behaviour: bounds, ports, listeners, events, window fields, super-segments."""

from __future__ import annotations

import random

import pytest
from harness import A, B, Capture, Net
from peer import Peer

from stack import seq as sq
from stack.tcp.api import TcpAddressError, TcpConfig, TcpState
from stack.tcp.layer import TcpLayer
from stack.tcp.state import TRANSITIONS, Event, InvalidTransition, transition
from stack.wire.tcp import ACK, FIN, RST, SYN, URG

S = TcpState


def test_state_table_follows_rfc_figure():
    assert transition(S.ESTABLISHED, Event.CLOSE) is S.FIN_WAIT_1
    assert transition(S.CLOSE_WAIT, Event.CLOSE) is S.LAST_ACK
    assert transition(S.FIN_WAIT_1, Event.FIN_RCVD) is S.CLOSING
    assert transition(S.FIN_WAIT_2, Event.FIN_RCVD) is S.TIME_WAIT
    with pytest.raises(InvalidTransition):  # unlisted: an error, never "no change"
        transition(S.CLOSED, Event.FIN_RCVD)
    assert all(v is not k[0] for k, v in TRANSITIONS.items())


def test_connection_table_is_bounded():
    layer = TcpLayer(Capture(), config=TcpConfig(max_connections=2), rng=random.Random(1))
    layer.connect(B, 80, 0.0)
    layer.connect(B, 81, 0.0)
    with pytest.raises(TcpAddressError):
        layer.connect(B, 82, 0.0)


def test_ephemeral_ports_run_out_with_a_typed_error():
    layer = TcpLayer(Capture(), config=TcpConfig(ephemeral_ports=(40000, 40001)),
                     rng=random.Random(1))
    ports = {layer.connect(B, 80, 0.0).local_port for _ in range(2)}
    assert ports == {40000, 40001}
    with pytest.raises(TcpAddressError):
        layer.connect(B, 80, 0.0)
    with pytest.raises(TcpAddressError):
        layer.connect(B, 80, 0.0, sport=40000)


@pytest.mark.parametrize("index,count", [(0, 2), (1, 2), (2, 3)])
def test_a_worker_opens_connections_only_on_ports_of_its_own_queue(index, count):
    from stack.netdev.steer import queue_of
    layer = TcpLayer(Capture(), config=TcpConfig(port_shard=(index, count)),
                     rng=random.Random(1))
    conns = [layer.connect(B, dport, 0.0) for dport in (80, 443, 1080) for _ in range(40)]
    assert all(queue_of(c.local_port, c.remote_port, count) == index for c in conns)
    assert len({(c.local_port, c.remote_port) for c in conns}) == len(conns)


def test_listen_twice_is_refused():
    layer = TcpLayer(Capture(), rng=random.Random(1))
    layer.listen(A, 80)
    with pytest.raises(TcpAddressError):
        layer.listen(A, 80)


def test_wildcard_listener_and_accept_backlog():
    p = Peer(TcpConfig(accept_backlog=1))
    lst = p.layer.listen(b"\0\0\0\0", 80)
    out = p.send(SYN, now=0.0, **p.syn_options())
    p.ack = sq.add(out[0].hdr.seq, 1)
    p.send(ACK, now=0.1)
    assert len(lst.accept_queue) == 1
    # the accept queue is full: a new SYN is dropped (and counted)
    p.sport = 5001
    p.seq = 9000
    assert p.send(SYN, now=0.2, **p.syn_options()) == []
    assert p.layer.counters["listen_overflow"] == 1


def test_listener_close_resets_unaccepted_connections():
    p = Peer()
    lst = p.layer.listen(A, 80)
    p.send(SYN, now=0.0, **p.syn_options())
    lst.close(0.1)
    out = p.take()
    assert [o.flags for o in out] == [RST | ACK]
    assert not p.layer.connections and (A, 80) not in p.layer.listeners


def test_retransmitted_syn_gets_synack_again():
    p = Peer()
    p.layer.listen(A, 80)
    (first,) = p.send(SYN, now=0.0, **p.syn_options())
    (again,) = p.send(SYN, seq=1000, now=0.5, **p.syn_options())
    assert again.flags == SYN | ACK and again.hdr.seq == first.hdr.seq


def test_synack_retransmitted_then_given_up():
    p = Peer(TcpConfig(synack_retries=1))
    lst = p.layer.listen(A, 80)
    p.send(SYN, now=0.0, **p.syn_options())
    t, out = p.fire()
    assert t == pytest.approx(1.0) and [o.flags for o in out] == [SYN | ACK]
    p.fire()
    assert not p.layer.connections and lst.syn_queue_len == 0


def test_window_field_is_scaled():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(ACK, b"x" * 2000, now=1.0)
    (ack,) = out
    assert tcb.rcv_wscale == 7
    assert ack.hdr.window == (tcb.rcvbuf - 2000) >> 7
    assert tcb.rcv_adv == sq.add(tcb.rcv_nxt, ack.hdr.window << 7)


def test_super_segment_is_accepted_as_one_unit():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(ACK, b"S" * 20000, now=1.0)
    assert [o.hdr.ack for o in out] == [1001 + 20000]
    assert tcb.recv(1 << 20) == b"S" * 20000


def test_urgent_data_is_delivered_in_band():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    p.send(ACK | URG, b"abc!", urgent=4, now=1.0)
    assert tcb.recv(10) == b"abc!" and tcb.rcv_up == 1005


def test_data_after_close_is_answered_with_rst():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.close(1.0)
    p.take()
    out = p.send(ACK, b"late data", now=1.1)
    assert RST | ACK in [o.flags for o in out]
    assert tcb.state is S.CLOSED


def test_events_are_not_reentrant_and_callbacks_may_call_back():
    net = Net()
    lst = net.b.listen(B, 80)
    log = []

    def server_event(t, e):
        log.append(("s", e, t.state))
        if e == "readable":
            t.send(t.recv(100).upper(), net.now)  # re-enters TCP from a callback
        if e == "eof":
            t.shutdown_write(net.now)

    lst.on_accept = lambda t: setattr(t, "on_event", server_event)
    c = net.a.connect(B, 80, 0.0)
    c.on_event = lambda t, e: log.append(("c", e, t.state))
    net.run(until=1.0)
    c.send(b"hello", net.now)
    c.shutdown_write(net.now)
    net.run(until=2.0)
    assert c.recv(100) == b"HELLO" and c.eof_received
    client = [e for who, e, _ in log if who == "c"]
    assert client[0] == "established" and "readable" in client and "eof" in client
    net.run()
    assert [e for who, e, _ in log if who == "c"][-1] == "closed"
    assert [e for who, e, _ in log if who == "s"][-1] == "closed"


def test_icmp_for_unknown_connection_is_counted():
    p = Peer()
    p.layer.icmp_error(A, B, 1, 2, 3, 3, 0.0)
    assert p.layer.counters["icmp_no_connection"] == 1


def test_fin_retransmitted_until_acknowledged():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    _, (again,) = p.fire()
    assert again.flags & FIN and again.hdr.seq == fin.hdr.seq
