"""The TCP state machine as one table (RFC 9293 §3.3.2, Figure 5).

Every state change of a connection goes through :func:`transition`; input.py and
tcb.py only decide *which event* happened. Resets, aborts and timeouts lead to
CLOSED from any state and are not listed.
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
    CLOSE = "application shut down its sending side: FIN queued"
    FIN_RCVD = "the peer's FIN, in order"
    ACK_OF_FIN = "the ACK of our FIN"
    TIMEOUT = "2*MSL or FIN_WAIT_2 timer expired"


#: (state, event) -> next state. A missing pair means "no change".
TRANSITIONS: dict[tuple[TcpState, Event], TcpState] = {
    (S.CLOSED, Event.SYN_SENT): S.SYN_SENT,
    (S.LISTEN, Event.SYN_RCVD): S.SYN_RECEIVED,
    (S.SYN_SENT, Event.SYN_RCVD): S.SYN_RECEIVED,       # simultaneous open
    (S.SYN_SENT, Event.SYN_ACK_RCVD): S.ESTABLISHED,
    (S.SYN_RECEIVED, Event.ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, Event.CLOSE): S.FIN_WAIT_1,
    (S.ESTABLISHED, Event.CLOSE): S.FIN_WAIT_1,
    (S.CLOSE_WAIT, Event.CLOSE): S.LAST_ACK,
    (S.SYN_RECEIVED, Event.FIN_RCVD): S.CLOSE_WAIT,
    (S.ESTABLISHED, Event.FIN_RCVD): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, Event.FIN_RCVD): S.CLOSING,          # simultaneous close
    (S.FIN_WAIT_2, Event.FIN_RCVD): S.TIME_WAIT,
    (S.FIN_WAIT_1, Event.ACK_OF_FIN): S.FIN_WAIT_2,
    (S.CLOSING, Event.ACK_OF_FIN): S.TIME_WAIT,
    (S.LAST_ACK, Event.ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, Event.TIMEOUT): S.CLOSED,
    (S.FIN_WAIT_2, Event.TIMEOUT): S.CLOSED,
}


def transition(state: TcpState, event: Event) -> TcpState:
    """The state that ``event`` leads to from ``state`` (unchanged when not listed)."""
    return TRANSITIONS.get((state, event), state)


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
