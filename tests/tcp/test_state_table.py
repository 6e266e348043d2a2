"""The state table is in charge: every row is taken by some real exchange, every
pair outside it raises, and nothing but Tcb.apply assigns a state."""

from __future__ import annotations

import ast
import pathlib

import pytest
from harness import A, B
from peer import Peer

from stack import seq as sq
from stack.tcp import state as state_mod
from stack.tcp import tcb as tcb_mod
from stack.tcp.api import TcpConfig, TcpState
from stack.tcp.state import TRANSITIONS, Event, InvalidTransition, transition
from stack.wire.tcp import ACK, FIN, RST, SYN

S = TcpState
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> set[tuple[TcpState, Event]]:
    """Every (state, event) pair that Tcb.apply looks up."""
    seen: set[tuple[TcpState, Event]] = set()

    def recording(state: TcpState, event: Event) -> TcpState:
        seen.add((state, event))
        return transition(state, event)

    monkeypatch.setattr(tcb_mod, "transition", recording)
    return seen


def _established_passive(p: Peer):
    _, tcb, _ = p.accept_connection()
    return tcb


def _active_close(p: Peer, tcb, now: float = 1.0) -> int:
    """Our FIN out and acknowledged (FIN-WAIT-2); returns its sequence number."""
    tcb.shutdown_write(now)
    (fin,) = p.take()
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=now + 0.1)
    return fin.hdr.seq


def _walk_opens(p: Peer) -> None:
    tcb = _established_passive(p)                           # CLOSED -syn-> SYN-RCVD -ack->
    tcb.abort(2.0)                                          # ESTABLISHED -drop->
    q = Peer()
    q.open_connection()                                     # CLOSED -syn_sent-> -syn_ack->
    r = Peer(ts=False)
    tcb = r.layer.connect(B, 5000, 0.0, sport=80)           # simultaneous open
    r.take()
    r.send(SYN, now=0.05, mss=1400)
    assert tcb.state is S.SYN_RECEIVED
    tcb.shutdown_write(0.06)                                # SYN-RECEIVED -close->
    assert tcb.state is S.FIN_WAIT_1
    c = Peer(TcpConfig(syn_backlog=0))                      # SYN cookie
    lst = c.layer.listen(A, 80)
    (synack,) = c.send(SYN, now=0.0, **c.syn_options())
    c.ack = sq.add(synack.hdr.seq, 1)
    c.send(ACK, now=0.1)
    assert lst.accept().state is S.ESTABLISHED


def _walk_closes() -> None:
    p = Peer()                                              # active close, 2*MSL
    tcb = _established_passive(p)
    _active_close(p, tcb)
    p.send(FIN | ACK, now=1.2)
    assert tcb.state is S.TIME_WAIT
    p.tick(100.0)
    assert tcb.state is S.CLOSED
    p = Peer()                                              # passive close
    tcb = _established_passive(p)
    p.send(FIN | ACK, now=1.0)
    tcb.shutdown_write(1.1)
    (fin,) = p.take()
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.2)
    assert tcb.state is S.CLOSED
    p = Peer()                                              # simultaneous close
    tcb = _established_passive(p)
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(FIN | ACK, now=1.1)
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.2)
    assert tcb.state is S.TIME_WAIT
    p = Peer(TcpConfig(fin_timeout=10.0))                   # orphaned FIN-WAIT-2
    tcb = _established_passive(p)
    tcb.close(1.0)
    (fin,) = p.take()
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    p.tick(20.0)
    assert tcb.state is S.CLOSED


def _walk_drops() -> None:
    p = Peer()
    p.layer.connect(B, 5000, 0.0, sport=81).abort(0.0)      # SYN-SENT
    p = Peer()
    lst = p.layer.listen(A, 80)
    (synack,) = p.send(SYN, now=0.0, **p.syn_options())     # SYN-RECEIVED, exact RST
    p.send(RST, seq=p.seq, now=0.1)
    assert not p.layer.connections and lst.accept() is None
    for how in ("fin_wait_1", "fin_wait_2", "close_wait"):
        p = Peer()
        tcb = _established_passive(p)
        if how == "fin_wait_1":
            tcb.shutdown_write(1.0)
        elif how == "fin_wait_2":
            _active_close(p, tcb)
        else:
            p.send(FIN | ACK, now=1.0)
        assert tcb.state.name == how.upper()
        tcb.abort(2.0)
    for how in ("closing", "last_ack"):
        p = Peer()
        tcb = _established_passive(p)
        if how == "closing":
            tcb.shutdown_write(1.0)
            p.take()
            p.send(FIN | ACK, now=1.1)
        else:
            p.send(FIN | ACK, now=1.0)
            tcb.shutdown_write(1.1)
            p.take()
        assert tcb.state.name == how.upper()
        p.send(RST, seq=p.seq, advance=False, now=2.0)
        assert tcb.state is S.CLOSED
    p = Peer()                                              # TIME-WAIT ended by a new SYN
    tcb = _established_passive(p)
    _active_close(p, tcb)
    p.send(FIN | ACK, now=1.2)
    p.tsval += 1000
    p.send(SYN, seq=900000, advance=False, now=3.0, **p.syn_options())
    assert tcb.state is S.CLOSED


def test_every_row_of_the_table_is_taken(taken: set[tuple[TcpState, Event]]) -> None:
    _walk_opens(Peer())
    _walk_closes()
    _walk_drops()
    assert taken == set(TRANSITIONS), (
        f"never taken: {set(TRANSITIONS) - taken}; not in the table: {taken - set(TRANSITIONS)}")


def test_every_pair_outside_the_table_raises() -> None:
    outside = [(s, e) for s in TcpState for e in Event if (s, e) not in TRANSITIONS]
    assert outside
    for s, e in outside:
        with pytest.raises(InvalidTransition):
            transition(s, e)
    assert all(v is not k[0] for k, v in TRANSITIONS.items())  # no silent self-loops


def test_an_unknown_pair_closes_the_connection_with_the_error_and_raises() -> None:
    p = Peer()
    tcb = _established_passive(p)
    events: list[str] = []
    tcb.on_event = lambda _t, ev: events.append(ev)
    with pytest.raises(InvalidTransition):
        tcb.apply(Event.SYN_SENT)
    assert tcb.state is S.CLOSED and isinstance(tcb.error, InvalidTransition)
    assert not p.layer.connections
    p.layer.flush_events()
    assert events == ["error", "closed"]


def test_the_syn_cookie_handshake_has_its_own_event(taken) -> None:
    c = Peer(TcpConfig(syn_backlog=0))
    c.layer.listen(A, 80)
    (synack,) = c.send(SYN, now=0.0, **c.syn_options())
    c.ack = sq.add(synack.hdr.seq, 1)
    c.send(ACK, now=0.1)
    assert taken == {(S.CLOSED, Event.COOKIE_ACK)}


def _state_assignments(path: pathlib.Path) -> list[int]:
    """Lines of ``path`` that assign an attribute named ``state``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
        for t in targets:
            if isinstance(t, ast.Attribute) and t.attr == "state":
                lines.append(node.lineno)
    return lines


def test_nothing_but_tcb_apply_assigns_a_tcp_state() -> None:
    for path in sorted((ROOT / "stack" / "tcp").glob("*.py")):
        if path.name in ("tcb.py", "state.py"):
            continue
        assert _state_assignments(path) == [], path
    src = (ROOT / "stack" / "tcp" / "tcb.py").read_text().splitlines()
    assigned = [src[n - 1].strip() for n in _state_assignments(ROOT / "stack" / "tcp" / "tcb.py")]
    # the birth state in __init__ and the one assignment in apply()
    assert assigned == ["self.state = TcpState.CLOSED", "self.state = new"]
    assert state_mod.transition is transition
