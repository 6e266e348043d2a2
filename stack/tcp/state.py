"""The TCP state machine as one table (RFC 9293 §3.3.2, Figure 5).

Everything that changes a connection's state lives here: input.py, ack.py,
timers.py, layer.py and tcb.py only decide *which event* happened and hand it to
``Tcb.apply``, the one place that assigns a state. A (state, event) pair that is
not in :data:`TRANSITIONS` raises :class:`InvalidTransition`; ``Tcb.apply`` then
moves the connection to CLOSED (with the error recorded) rather than letting it
half-continue in a state the table does not know.

TCBs are born CLOSED: a listener is a ``Listener``, not a TCB in LISTEN, so the
passive open of Figure 5 (LISTEN -> SYN-RECEIVED) starts here from the new TCB's
CLOSED, and so does the SYN-cookie handshake (RFC 4987 §3.6), which builds its
TCB only from the final ACK, straight into ESTABLISHED.
"""

from __future__ import annotations

import enum

from stack.tcp.api import TcpState

S = TcpState


class Event(enum.Enum):
    """What can move a connection from one state to the next."""

    SYN_SENT = "active open: SYN sent"
    SYN_RCVD = "SYN received (passive open, or simultaneous open)"
    SYN_ACK_RCVD = "our SYN acknowledged and the peer's SYN received"
    ACK_OF_SYN = "the ACK of our SYN-ACK"
    COOKIE_ACK = "the ACK of a SYN cookie (RFC 4987 §3.6): the TCB is built established"
    CLOSE = "application shut down its sending side: FIN queued"
    FIN_RCVD = "the peer's FIN, in order"
    ACK_OF_FIN = "the ACK of our FIN"
    TIMEOUT = "2*MSL or FIN_WAIT_2 timer expired"
    DROP = "reset received or sent, abort, fatal error, TIME-WAIT ended early"


class InvalidTransition(RuntimeError):
    """A (state, event) pair that the table does not list: a bug in the caller."""


#: Every state a TCB can leave by DROP (RFC 9293 §3.10.5 ABORT, §3.10.7.4 RST,
#: RFC 6191 TIME-WAIT reuse): all but CLOSED (and LISTEN, which no TCB holds).
_DROPPABLE = (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2,
              S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT)

#: (state, event) -> next state. A missing pair raises InvalidTransition.
TRANSITIONS: dict[tuple[TcpState, Event], TcpState] = {
    (S.CLOSED, Event.SYN_SENT): S.SYN_SENT,
    (S.CLOSED, Event.SYN_RCVD): S.SYN_RECEIVED,         # passive open (a listener's TCB)
    (S.CLOSED, Event.COOKIE_ACK): S.ESTABLISHED,        # SYN-cookie handshake
    (S.SYN_SENT, Event.SYN_RCVD): S.SYN_RECEIVED,       # simultaneous open
    (S.SYN_SENT, Event.SYN_ACK_RCVD): S.ESTABLISHED,
    (S.SYN_RECEIVED, Event.ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, Event.CLOSE): S.FIN_WAIT_1,
    (S.ESTABLISHED, Event.CLOSE): S.FIN_WAIT_1,
    (S.CLOSE_WAIT, Event.CLOSE): S.LAST_ACK,
    (S.ESTABLISHED, Event.FIN_RCVD): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, Event.FIN_RCVD): S.CLOSING,          # simultaneous close
    (S.FIN_WAIT_2, Event.FIN_RCVD): S.TIME_WAIT,
    (S.FIN_WAIT_1, Event.ACK_OF_FIN): S.FIN_WAIT_2,
    (S.CLOSING, Event.ACK_OF_FIN): S.TIME_WAIT,
    (S.LAST_ACK, Event.ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, Event.TIMEOUT): S.CLOSED,
    (S.FIN_WAIT_2, Event.TIMEOUT): S.CLOSED,
    **{(s, Event.DROP): S.CLOSED for s in _DROPPABLE},
}


def transition(state: TcpState, event: Event) -> TcpState:
    """The state that ``event`` leads to from ``state``; InvalidTransition if unlisted."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"no transition from {state.name} on {event.name}") from None


#: States in which both sides' sequence numbers are known (RFC 9293 §3.10.7.4).
SYNCHRONIZED = frozenset({
    S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
    S.CLOSING, S.LAST_ACK, S.TIME_WAIT,
})

#: States in which the application may still queue data to send.
CAN_SEND = frozenset({S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT})

#: States in which segment text from the peer is accepted (RFC 9293 §3.10.7.4, step 7).
CAN_RECEIVE = frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})

#: States in which our FIN has been queued.
FIN_QUEUED = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT})
