"""Per-client-address limits on connection slots, shared by both proxies.

A proxy serves at most ``max_connections`` clients at once; without a limit per
address, one client that opens that many connections (or that many one-byte
handshakes, or idle keep-alives) locks everyone else out for a whole timeout.
:class:`ClientSlots` counts, per address, the connections open and the ones still
in their handshake (SOCKS: greeting to request; HTTP: until the first request
head). A new connection over either bound is refused at once and counted.

:class:`IdlePool` is the HTTP proxy's list of kept-alive connections waiting for
their next request. Under slot pressure the oldest idle one is closed first (as
nginx reuses keep-alive connections), so that a new client gets its slot.

Both tables hold only live connections: they are bounded by the connection limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Iterator

__all__ = ["HANDSHAKE_LIMIT", "OVER_LIMIT", "PER_CLIENT_LIMIT", "ClientSlots", "IdlePool",
           "Ticket", "admit_closing_idle"]

PER_CLIENT_LIMIT, HANDSHAKE_LIMIT = "per_client_limit", "handshake_limit"
OVER_LIMIT = "over_limit"


class Ticket:
    """One admitted connection: its slot and, until :meth:`handshake_done`, its
    handshake. Both calls are idempotent."""

    __slots__ = ("_slots", "addr", "_open", "_handshaking")

    def __init__(self, slots: ClientSlots, addr: str) -> None:
        self._slots, self.addr = slots, addr
        self._open = self._handshaking = True

    def handshake_done(self) -> None:
        """The handshake is over (the connection keeps its slot)."""
        if self._handshaking:
            self._handshaking = False
            _decrement(self._slots.handshakes, self.addr)

    def release(self) -> None:
        """The connection is gone: free its slot (and its handshake)."""
        self.handshake_done()
        if self._open:
            self._open = False
            _decrement(self._slots.connections, self.addr)


class ClientSlots:
    """Connections and handshakes in progress per client address."""

    def __init__(self, max_per_client: int = 64, max_handshakes: int = 32) -> None:
        if max_per_client < 1 or max_handshakes < 1:
            raise ValueError("per-client limits must be at least 1")
        self.max_per_client, self.max_handshakes = max_per_client, max_handshakes
        self.connections: Counter[str] = Counter()
        self.handshakes: Counter[str] = Counter()

    def refusal(self, addr: str) -> str | None:
        """Why a new connection from ``addr`` would be refused now, or None."""
        if self.connections[addr] >= self.max_per_client:
            return PER_CLIENT_LIMIT
        if self.handshakes[addr] >= self.max_handshakes:
            return HANDSHAKE_LIMIT
        return None

    def admit(self, addr: str) -> Ticket:
        """Take a slot and a handshake for ``addr`` (after :meth:`refusal`)."""
        self.connections[addr] += 1
        self.handshakes[addr] += 1
        return Ticket(self, addr)


def _decrement(counter: Counter[str], addr: str) -> None:
    counter[addr] -= 1
    if counter[addr] <= 0:
        del counter[addr]       # only live addresses stay in the table


class IdlePool:
    """Kept-alive connections waiting for a request, oldest first; each is the
    ``asyncio.timeout`` of its wait, which closing expires at once."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[int, tuple[str, asyncio.Timeout]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    @contextlib.contextmanager
    def waiting(self, addr: str, timeout: asyncio.Timeout) -> Iterator[None]:
        """Register the idle wait of a connection from ``addr`` for its duration."""
        key = id(timeout)
        self._waiting[key] = (addr, timeout)
        try:
            yield
        finally:
            self._waiting.pop(key, None)

    def close_oldest(self, addr: str | None = None) -> bool:
        """Expire the idle wait of the oldest idle connection (of ``addr`` if given):
        it ends as its idle timeout would, with a FIN. Whether there was one."""
        for key, (who, timeout) in self._waiting.items():
            if addr is None or who == addr:
                del self._waiting[key]
                timeout.reschedule(asyncio.get_running_loop().time())
                self.evicted += 1
                return True
        return False


def admit_closing_idle(slots: ClientSlots, idle: IdlePool, addr: str, full: bool,
                       counters: Counter[str]) -> Ticket | str:
    """Admit a new connection from ``addr`` (``full``: every slot of the proxy is
    taken), closing an idle keep-alive connection to make room if that is what
    stands in the way: the address's own oldest, else (proxy full) anyone's oldest.
    The ticket, or why the connection is refused (a counter name)."""
    refusal = slots.refusal(addr)
    if refusal == HANDSHAKE_LIMIT:
        return refusal          # idle connections are not handshakes: closing one won't help
    if refusal == PER_CLIENT_LIMIT or full:
        if not (idle.close_oldest(addr) or (refusal is None and idle.close_oldest())):
            return refusal or OVER_LIMIT
        counters["idle_closed"] += 1
    return slots.admit(addr)
