"""Splice states of one interface, and the one table of their transitions (docs/splice.md §2).

Each of the two connections of a splice pair (the client interface and the server
interface) has its own state. The table maps (state, event) to the next state;
anything not in it is a programming error, raised as :class:`SpliceStateError`.
Every change of an interface's state goes through it (``Side.apply``), the end of a
pair too (RESET, or TIMEOUT after TIMEWAIT); tests/splice/test_state_table.py shows
each row taken by the running splicer.
"""

from __future__ import annotations

import enum


class SpliceState(enum.Enum):
    """States of one interface of a splice pair."""

    CLOSE = "close"                # server interface: created, not connected yet
    ESTABLISHED = "established"    # connected, not spliced yet: arriving segments queue
    PRE_SPLICED = "pre_spliced"    # the proxy's own data on it is not all acknowledged
    SPLICED = "spliced"            # every segment from the other side is relayed out of it
    FIN_RELAYED = "fin_relayed"    # a FIN was relayed out of it
    SHUTDOWN = "shutdown"          # that FIN was acknowledged by its peer
    TIMEWAIT = "timewait"          # both SHUTDOWN: relaying on for 2*MSL
    CLOSED = "closed"              # torn down (after TIMEWAIT or a RST)

    # Members are singletons compared by identity: hashing them by identity too keeps
    # every table lookup in C (Enum's own __hash__ is a Python call per lookup).
    __hash__ = object.__hash__


class SpliceEvent(enum.Enum):
    """What moves an interface along."""

    CONNECTED = "connected"        # the server connection's handshake completed
    SPLICE_OWED = "splice_owed"    # splice() while the proxy still owes or awaits data
    SPLICE_CLEAN = "splice_clean"  # splice() with nothing owed and nothing unacknowledged
    OWED_DONE = "owed_done"        # the owed bytes are written and acknowledged
    FIN_OUT = "fin_out"            # a FIN was relayed out of this interface
    FIN_ACKED = "fin_acked"        # its peer acknowledged that FIN
    BOTH_SHUTDOWN = "both_shutdown"
    TIMEOUT = "timeout"            # 2*MSL passed in TIMEWAIT
    RESET = "reset"                # a RST from either side, or an abort

    __hash__ = object.__hash__     # (as SpliceState's)


S, E = SpliceState, SpliceEvent

TRANSITIONS: dict[tuple[SpliceState, SpliceEvent], SpliceState] = {
    (S.CLOSE, E.CONNECTED): S.ESTABLISHED,
    (S.ESTABLISHED, E.SPLICE_OWED): S.PRE_SPLICED,
    (S.ESTABLISHED, E.SPLICE_CLEAN): S.SPLICED,
    (S.PRE_SPLICED, E.OWED_DONE): S.SPLICED,
    # A FIN leaves only an interface that relays: a queued one is relayed after the
    # interface became SPLICED (splice() and OWED_DONE move it first), never straight
    # from ESTABLISHED or PRE_SPLICED.
    (S.SPLICED, E.FIN_OUT): S.FIN_RELAYED,
    (S.FIN_RELAYED, E.FIN_OUT): S.FIN_RELAYED,       # a retransmitted FIN
    (S.FIN_RELAYED, E.FIN_ACKED): S.SHUTDOWN,
    (S.SHUTDOWN, E.FIN_OUT): S.SHUTDOWN,
    (S.TIMEWAIT, E.FIN_OUT): S.TIMEWAIT,
    (S.SHUTDOWN, E.BOTH_SHUTDOWN): S.TIMEWAIT,
    (S.TIMEWAIT, E.TIMEOUT): S.CLOSED,
}
for _state in SpliceState:
    if _state is not S.CLOSED:
        TRANSITIONS[(_state, E.RESET)] = S.CLOSED

#: States in which segments from the other side are relayed out of the interface.
RELAYING = frozenset({S.SPLICED, S.FIN_RELAYED, S.SHUTDOWN, S.TIMEWAIT})


class SpliceStateError(RuntimeError):
    """An event that the state table does not allow in the current state."""


def next_state(state: SpliceState, event: SpliceEvent) -> SpliceState:
    """The state after ``event`` (docs/splice.md §2)."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise SpliceStateError(f"{event.value} is not allowed in {state.value}") from None
