"""The splice state table (splice/state.py) is in charge: every row gives what it lists,
every pair it does not list raises, and every row is one the running splicer takes
(no dead rows). The last is shown by recording ``Side.apply`` while the splice
scripts of tests/packetdrill and the scripts below run."""

from __future__ import annotations

from pathlib import Path

import pytest

from splice import pair as pair_mod
from splice.pair import Side
from splice.state import (
    RELAYING,
    TRANSITIONS,
    SpliceEvent,
    SpliceState,
    SpliceStateError,
    next_state,
)
from splice.testing import run_script

S, E = SpliceState, SpliceEvent
SCRIPTS = sorted((Path(__file__).parent.parent / "packetdrill").glob("splice_*.pkt"))

HEAD = """\
--splice
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    init_splice(3) = 0
+0    client < S 0:0(0) win 65535 <mss 1460>
+0    client > S. 0:0(0) ack 1 <mss 1460>
+.1   client < . 1:1(0) ack 1 win 65535
+0    accept(3, ..., ...) = 4
+0    intend_splice(4, ...) = 5
+0    server > S 0:0(0) <mss 1460>
"""
CONNECTED = HEAD + """\
+.05  server < S. 0:0(0) ack 1 win 65535 <mss 1460>
+0    server > . 1:1(0) ack 1
"""
SPLICED = CONNECTED + "+0    splice(4, 5, 0) = 0\n"
#: Both FINs relayed and acknowledged, each retransmitted once before and once after
#: its acknowledgement, the last in TIMEWAIT; then 2*MSL passes.
CLOSE_WITH_RETRANSMITTED_FINS = SPLICED + """\
+.1   client < F. 1:1(0) ack 1 win 65535
+0    server > F. 1:1(0) ack 1 win 65535
+.05  client < F. 1:1(0) ack 1 win 65535
+0    server > F. 1:1(0) ack 1 win 65535
+.05  server < . 1:1(0) ack 2 win 65535
+0    client > . 1:1(0) ack 2 win 65535
+.05  client < F. 1:1(0) ack 1 win 65535
+0    server > F. 1:1(0) ack 1 win 65535
+.1   server < F. 1:1(0) ack 2 win 65535
+0    client > F. 1:1(0) ack 2 win 65535
+.05  client < . 2:2(0) ack 2 win 65535
+0    server > . 2:2(0) ack 2 win 65535
+.05  client < F. 1:1(0) ack 2 win 65535
+0    server > F. 1:1(0) ack 2 win 65535
+61   client < . 2:2(0) ack 2 win 65535
+0    client > R 2:2(0) win 0
"""
#: The origin refuses the connection: the pair is abandoned (CLOSE, ESTABLISHED).
REFUSED = HEAD + "+.05  server < R. 0:0(0) ack 1 win 0\n"
#: The client resets before splice(): both interfaces ESTABLISHED.
RESET_BEFORE_SPLICE = CONNECTED + """\
+.05  client < R 1:1(0) win 0
+0    server > R. 1:1(0) ack 1 win 65535
"""
#: A reset while the client interface still owes its reply (PRE_SPLICED, SPLICED).
RESET_WHILE_OWED = CONNECTED + """\
+0    splice(4, 5, 3) = 0
+0    write(4, ..., 3) = 3
+0    client > P. 1:4(3) ack 1 win 65535
+.05  server < R. 1:1(0) ack 1 win 0
+0    client > R. 4:4(0) ack 1 win 65535
"""
#: A reset after one FIN each way, one acknowledged (FIN_RELAYED, SHUTDOWN).
RESET_WHILE_CLOSING = SPLICED + """\
+.1   client < F. 1:1(0) ack 1 win 65535
+0    server > F. 1:1(0) ack 1 win 65535
+.05  server < F. 1:1(0) ack 2 win 65535
+0    client > F. 1:1(0) ack 2 win 65535
+.05  server < R. 1:1(0) ack 2 win 0
+0    client > R. 1:1(0) ack 2 win 0
// The client may hold the relayed FIN it did not acknowledge yet: a RST past it too.
+0    client > R 2:2(0) win 0
"""
#: A newer SYN on the client's 4-tuple ends a pair in TIMEWAIT (RFC 6191).
REOPENED_IN_TIMEWAIT = SPLICED + """\
+.1   client < F. 1:1(0) ack 1 win 65535
+0    server > F. 1:1(0) ack 1 win 65535
+.05  server < F. 1:1(0) ack 2 win 65535
+0    client > F. 1:1(0) ack 2 win 65535
+.05  server < . 2:2(0) ack 2 win 65535
+0    client > . 2:2(0) ack 2 win 65535
+.05  client < . 2:2(0) ack 2 win 65535
+0    server > . 2:2(0) ack 2 win 65535
+1    client < S 90000:90000(0) win 65535 <mss 1460>
+0    client > S. 0:0(0) ack 90001 <mss 1460>
"""
EXTRA = {"close_with_retransmitted_fins": CLOSE_WITH_RETRANSMITTED_FINS,
         "refused": REFUSED, "reset_before_splice": RESET_BEFORE_SPLICE,
         "reset_while_owed": RESET_WHILE_OWED, "reset_while_closing": RESET_WHILE_CLOSING,
         "reopened_in_timewait": REOPENED_IN_TIMEWAIT}


def _side(state: SpliceState) -> Side:
    return Side(tcb=None, role="client", state=state)  # type: ignore[arg-type]


@pytest.mark.parametrize("row", sorted(TRANSITIONS, key=lambda r: (r[0].value, r[1].value)),
                         ids=lambda r: f"{r[0].value}-{r[1].value}")
def test_every_row_gives_what_it_lists(row):
    state, event = row
    assert next_state(state, event) is TRANSITIONS[row]
    side = _side(state)
    assert side.apply(event) is TRANSITIONS[row] and side.state is TRANSITIONS[row]


def test_every_pair_not_listed_raises_and_changes_nothing():
    for state in SpliceState:
        for event in SpliceEvent:
            if (state, event) in TRANSITIONS:
                continue
            side = _side(state)
            with pytest.raises(SpliceStateError):
                side.apply(event)
            assert side.state is state


def test_every_state_is_reachable_and_closed_is_the_only_end():
    reached = {S.CLOSE, S.ESTABLISHED}     # where the server and client interfaces start
    while True:
        more = {nxt for (st, _ev), nxt in TRANSITIONS.items() if st in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(SpliceState)
    leaves = {st for (st, _ev) in TRANSITIONS}
    assert set(SpliceState) - leaves == {S.CLOSED}
    assert S.PRE_SPLICED not in RELAYING and S.TIMEWAIT in RELAYING


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_scripts_for_rows_the_splice_scripts_leave_out(name):
    run_script(f"{name}.pkt", text=EXTRA[name])


def test_the_running_splicer_takes_every_row(monkeypatch):
    taken: set[tuple[SpliceState, SpliceEvent]] = set()
    apply = pair_mod.Side.apply

    def recording(self: Side, event: SpliceEvent) -> SpliceState:
        taken.add((self.state, event))
        return apply(self, event)
    monkeypatch.setattr(pair_mod.Side, "apply", recording)
    for path in SCRIPTS:
        run_script(path)
    for name, text in EXTRA.items():
        run_script(f"{name}.pkt", text=text)
    assert taken == set(TRANSITIONS), sorted(
        (s.value, e.value) for s, e in set(TRANSITIONS) - taken)
