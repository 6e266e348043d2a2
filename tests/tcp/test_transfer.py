"""Two TcpLayers over the in-memory link: handshakes, transfers, closes, recovery."""

from __future__ import annotations

import pytest
from harness import A, B, Net

from stack.tcp.api import TcpConfig, TcpState
from stack.wire.tcp import FIN, RST

S = TcpState


def pattern(n: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) & 0xFF for i in range(n))


class Stream:
    """Feeds ``data`` into ``tx`` and collects what ``rx`` receives."""

    def __init__(self, tx, rx, data: bytes, close: bool = True) -> None:
        self.tx, self.rx, self.data, self.close = tx, rx, data, close
        self.sent = 0
        self.got = bytearray()
        self.closed = False

    def pump(self, now: float) -> None:
        if self.sent < len(self.data) and self.tx.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            self.sent += self.tx.send(self.data[self.sent:self.sent + 262144], now)
        if self.sent == len(self.data) and self.close and not self.closed \
                and self.tx.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            self.tx.shutdown_write(now)
            self.closed = True
        self.got += self.rx.recv(1 << 20)

    @property
    def done(self) -> bool:
        return len(self.got) == len(self.data) and (not self.close or self.rx.eof_received)


def run_streams(net: Net, streams: list[Stream], limit: float = 120.0) -> None:
    for _ in range(500000):
        for s in streams:
            s.pump(net.now)
        if all(s.done for s in streams):
            return
        if not net.step() or net.now > limit:
            break
    for s in streams:
        s.pump(net.now)
    assert all(s.done for s in streams), [(len(s.got), len(s.data)) for s in streams]


def connect(net: Net, port: int = 80):
    lst = net.b.listen(B, port)
    accepted = []
    lst.on_accept = accepted.append
    c = net.a.connect(B, port, net.now)
    net.run(stop=lambda: accepted and c.state is S.ESTABLISHED, until=net.now + 30)
    assert c.state is S.ESTABLISHED and accepted
    return c, accepted[0]


def test_handshake_events_and_options():
    net = Net()
    lst = net.b.listen(B, 80)
    events = []
    accepted = []
    lst.on_accept = accepted.append
    c = net.a.connect(B, 80, 0.0)
    c.on_event = lambda t, e: events.append(e)
    net.run(until=1.0)
    assert events == ["established"]
    (s,) = accepted
    assert s.state is S.ESTABLISHED and s.remote_address == (A, c.local_port)
    for t in (c, s):
        assert t.ts_ok and t.sack_ok and t.wscale_ok and t.mss == 1448
    assert c.rtt.srtt == pytest.approx(0.02)


def test_bulk_both_ways_and_clean_close():
    net = Net()
    c, s = connect(net)
    up, down = pattern(700_000, 1), pattern(900_000, 2)
    streams = [Stream(c, s, up), Stream(s, c, down)]
    run_streams(net, streams)
    assert bytes(streams[0].got) == up and bytes(streams[1].got) == down
    net.run(until=net.now + 5)
    assert {c.state, s.state} <= {S.TIME_WAIT, S.CLOSED}
    net.run()
    assert c.state is S.CLOSED and s.state is S.CLOSED
    assert not net.a.connections and not net.b.connections


def test_half_close_peer_keeps_sending():
    net = Net()
    c, s = connect(net)
    c.shutdown_write(net.now)
    net.run(until=net.now + 1)
    assert s.eof_received and s.state is S.CLOSE_WAIT and c.state is S.FIN_WAIT_2
    data = pattern(200_000)
    st = Stream(s, c, data)
    run_streams(net, [st])
    assert bytes(st.got) == data
    net.run(until=net.now + 1)
    assert c.state is S.TIME_WAIT and s.state is S.CLOSED
    with pytest.raises(BrokenPipeError):
        c.send(b"late", net.now)


def test_simultaneous_open():
    net = Net()
    c1 = net.a.connect(B, 7000, 0.0, sport=6000)
    c2 = net.b.connect(A, 6000, 0.0, sport=7000)
    net.run(until=2.0)
    assert c1.state is S.ESTABLISHED and c2.state is S.ESTABLISHED
    assert c1.send(b"ping", net.now) == 4
    net.run(until=net.now + 1)
    assert c2.recv(10) == b"ping"


def test_simultaneous_close():
    net = Net()
    c, s = connect(net)
    c.shutdown_write(net.now)
    s.shutdown_write(net.now)
    net.run(until=net.now + 1)
    assert c.state is S.TIME_WAIT and s.state is S.TIME_WAIT
    closings = [h for _, _, h, _ in net.log if h.flags & FIN]
    assert len(closings) == 2
    net.run()
    assert not net.a.connections and not net.b.connections
    assert net.now == pytest.approx(2 * 30.0 + net.log[-1][0], abs=1.0)


def test_abort_resets_peer():
    net = Net()
    c, s = connect(net)
    events = []
    s.on_event = lambda t, e: events.append(e)
    c.abort(net.now)
    net.run(until=net.now + 1)
    assert s.state is S.CLOSED and isinstance(s.error, ConnectionResetError)
    assert "error" in events and "closed" in events
    assert any(h.flags & RST for _, _, h, _ in net.log)


def test_connection_refused():
    net = Net()
    c = net.a.connect(B, 81, 0.0)
    net.run(until=1.0)
    assert c.state is S.CLOSED and isinstance(c.error, ConnectionRefusedError)


def test_retransmission_after_loss_at_rto():
    net = Net()
    c, s = connect(net)
    dropped = []

    def drop_first_data(src, hdr, plen):
        if src == A and plen and not dropped:
            dropped.append(net.now)
            return True
        return False

    net.drop_filter.append(drop_first_data)
    rto = c.rtt.rto
    t0 = net.now
    c.send(b"lost once", t0)
    net.run(until=t0 + 5)
    assert s.recv(100) == b"lost once"
    retrans = [t for t, src, h, n in net.log if src == A and n == 9]
    assert len(retrans) == 2 and retrans[1] - retrans[0] == pytest.approx(rto)
    assert c.info()["total_retrans"] == 1


def test_fast_retransmit_recovers_without_rto():
    for sack in (True, False):
        cfg = TcpConfig(sack=sack)
        net = Net(config_a=cfg, config_b=cfg)
        c, s = connect(net)
        lost = []

        def drop_one(src, hdr, plen, lost=lost, net=net):
            if src == A and plen and net.a.counters["segs_out"] > 60 and not lost:
                lost.append(hdr.seq)
                return True
            return False

        net.drop_filter.append(drop_one)
        data = pattern(400_000)
        st = Stream(c, s, data, close=False)
        run_streams(net, [st])
        assert bytes(st.got) == data and lost
        assert net.a.counters["fast_retransmits"] == 1
        assert net.a.counters["rto_expired"] == 0


def test_sack_recovery_of_several_losses_in_one_window():
    net = Net()
    c, s = connect(net)
    seen = []

    def drop_some(src, hdr, plen):
        if src == A and plen:
            seen.append(hdr.seq)
            return len(seen) in (80, 83, 86)
        return False

    net.drop_filter.append(drop_some)
    data = pattern(500_000)
    st = Stream(c, s, data, close=False)
    run_streams(net, [st])
    assert bytes(st.got) == data
    assert net.a.counters["fast_retransmits"] == 1 and net.a.counters["rto_expired"] == 0
    assert net.a.counters["retransmits"] == 3


def test_zero_window_persist_then_resume():
    cfg = TcpConfig(rcvbuf_autotune=False, rcvbuf=16384)
    net = Net(config_b=cfg)
    c, s = connect(net)
    data = pattern(100_000)
    sent = c.send(data, net.now)
    net.run(until=net.now + 10)
    # the receiver's window closed up to less than one MSS (receiver SWS avoidance)
    assert 16384 - 1460 < s.recv_available() <= 16384 and c.snd_wnd < 1460
    assert net.a.counters["window_probes"] >= 3
    got = bytearray()
    for _ in range(10000):
        got += s.recv(1 << 20)
        if sent < len(data):
            sent += c.send(data[sent:], net.now)
        if len(got) == len(data) or not net.step():
            break
    assert bytes(got) == data


def test_time_wait_expires_after_two_msl():
    net = Net()
    c, s = connect(net)
    c.close(net.now)
    net.run(until=net.now + 1)
    s.close(net.now)
    net.run(until=net.now + 1)
    t = net.now
    assert c.state is S.TIME_WAIT and s.state is S.CLOSED
    net.run(until=t + 58)
    assert c.state is S.TIME_WAIT
    net.run(until=t + 61)
    assert c.state is S.CLOSED and not net.a.connections


def test_offload_super_segments_both_ways():
    net = Net(offload=True)
    c, s = connect(net)
    up, down = pattern(600_000, 3), pattern(300_000, 4)
    streams = [Stream(c, s, up), Stream(s, c, down)]
    run_streams(net, streams)
    assert bytes(streams[0].got) == up and bytes(streams[1].got) == down
    assert max(n for _, _, _, n in net.log) > 1460


def test_lossy_reordering_link_delivers_everything():
    net = Net(seed=3, loss=0.03, dup=0.02, reorder=0.05, corrupt=0.01)
    c, s = connect(net)
    up, down = pattern(150_000, 5), pattern(120_000, 6)
    streams = [Stream(c, s, up), Stream(s, c, down)]
    run_streams(net, streams, limit=600)
    assert bytes(streams[0].got) == up and bytes(streams[1].got) == down


def test_receive_buffer_autotuning_grows_when_reader_keeps_up():
    net = Net(delay=0.02)
    c, s = connect(net)
    start = s.rcvbuf
    st = Stream(c, s, pattern(3_000_000), close=False)
    run_streams(net, [st])
    assert s.rcvbuf > start and s.rcvbuf <= net.b.config.rcvbuf_max


def test_path_mtu_drop_with_icmp_recovers_the_stream():
    net = Net()
    c, s = connect(net)

    def narrow_link(src, hdr, plen):
        # a router with a 1000-byte MTU on the way from A: drop and report (RFC 1191)
        if src == A and plen + hdr.header_len + 20 > 1000:
            net.at(net.now + net.delay, lambda now, q=hdr.seq, sp=hdr.sport, dp=hdr.dport:
                   net.a.icmp_error(A, B, sp, dp, 3, 4, now, mtu=1000, seg_seq=q))
            return True
        return False

    net.drop_filter.append(narrow_link)
    data = pattern(300_000)
    st = Stream(c, s, data)
    run_streams(net, [st])
    assert bytes(st.got) == data
    assert c.mss == 1000 - 40 - 12 and net.a.counters["icmp_frag_needed"] >= 1
    assert net.a.counters["rto_expired"] == 0
