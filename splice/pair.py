"""The two halves of a splice and what they record (docs/splice.md §2, §4)."""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from splice.mapping import DirectionMap
from splice.state import SpliceEvent, SpliceState, next_state
from splice.tap import Tap
from stack.wire.ipv4 import endpoint_str, ip_str

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb


log = logging.getLogger("tapsplice.splice")


class SpliceError(RuntimeError):
    """Misuse of the splice primitives; nothing was changed."""


@dataclass(slots=True)
class QueuedFrame:
    """A private copy of a frame waiting to be relayed (the read buffer is reused)."""

    frame: bytes
    vnet: tuple[int, int, int, int, int, int]
    tcp_off: int          # offset of the TCP header in ``frame``
    payload: int


@dataclass(eq=False, slots=True)
class Side:
    """One interface of a splice pair: a connection of the proxy and its splice state."""

    tcb: Tcb
    role: str                                   # "client" or "server"
    state: SpliceState
    #: Frames from the other side waiting to leave through this interface.
    #: (an empty deque costs ~600 bytes: made when a first frame waits)
    pending: deque[QueuedFrame] | None = None
    pending_bytes: int = 0
    #: Bytes the application may still write on this connection (client: n).
    owed: int = 0
    #: Base points at splice time: next byte we send / expect (docs/splice.md §4).
    iss: int = 0
    irs: int = 0
    #: Rewrite for segments that leave through this interface.
    out_map: DirectionMap | None = None
    #: Sequence number, in this connection's space, just past the FIN relayed out of it.
    fin_end: int | None = None
    #: The pair's other interface and the pair: set by Splicer.intend_splice right
    #: after both sides are made (never None afterwards, so the relay reads them as is).
    other: Side = field(init=False)
    #: A copy of what arrives on this interface, for the application (TCP Tap).
    tap: Tap | None = None
    #: Looked up once, not per relayed segment: the pair, whether the outgoing device
    #: takes offloads, and the names of the per-splice counters of this direction.
    pair: SplicePair = field(init=False)
    offload: bool = True
    seg_key: str = ""
    byte_key: str = ""
    #: What this interface's peer last sent, as far as the relay saw (splice/guard.py):
    #: its acknowledgement and window field (None: nothing relayed from it yet), and
    #: the TSval of its last segment that took the slow path (its FIN, for TIMEWAIT).
    peer_ack: int | None = None
    peer_win: int = 0
    peer_tsval: int | None = None
    #: Just past the newest payload relayed out of this interface, in the sequence
    #: space of the other connection (None: none yet).
    sent_end: int | None = None
    #: The acknowledgement of the last challenge ACK sent to this interface's peer: a
    #: RST at exactly that number is its answer (splice/guard.py).
    challenged: int | None = None

    def apply(self, event: SpliceEvent) -> SpliceState:
        """Move along the splice state table (logged at debug level: --log-level debug)."""
        old = self.state
        self.state = next_state(old, event)
        if log.isEnabledFor(logging.DEBUG):
            t = self.tcb
            log.debug("splice %s %s:%d<->%s:%d %s -%s-> %s", self.role,
                      ip_str(t.local), t.local_port, ip_str(t.remote), t.remote_port,
                      old.value, event.value, self.state.value)
        return self.state


@dataclass(eq=False, slots=True)
class SplicePair:
    """A client connection and a server connection spliced (or about to be)."""

    client: Side
    server: Side
    counters: Counter = field(default_factory=Counter)
    created: float = 0.0
    spliced_at: float | None = None
    timewait_until: float | None = None
    closed: bool = False
    reset: bool = False
    #: When a segment of the pair last arrived (either way): the idle timeout's clock.
    last_seen: float = 0.0
    #: Why the stack ended the pair itself: "idle" (idle timeout) or "drain" (shutdown).
    ended_by: str | None = None
    #: With a tap: an asyncio.StreamReader holding a copy of the tapped direction.
    tap_reader: object = None

    def sides(self) -> tuple[Side, Side]:
        """(client, server)."""
        return self.client, self.server

    def info(self) -> dict:
        """A summary for statistics and logs."""
        def one(s: Side) -> dict:
            t = s.tcb
            return {"state": s.state.value, "local": endpoint_str(t.local, t.local_port),
                    "remote": endpoint_str(t.remote, t.remote_port),
                    "pending": len(s.pending or ())}
        return {"client": one(self.client), "server": one(self.server),
                "counters": dict(self.counters),
                **({"ended_by": self.ended_by} if self.ended_by else {})}
