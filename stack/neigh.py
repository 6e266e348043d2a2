"""The neighbour (ARP) cache: RFC 826 resolution with timeouts and bounded queues.

An entry is INCOMPLETE while a request is outstanding (frames for it wait in a small
bounded queue), REACHABLE for ``reachable_time`` after a reply or request from the
neighbour, then STALE: still used, but the next use sends a fresh unicast request
(RFC 1122 §2.3.2.1 asks that stale entries be revalidated rather than trusted forever).
Unanswered resolution gives up after ``max_probes`` requests; the waiting frames are
dropped and counted, and their senders learn "host unreachable" from the caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from stack.iface import Interface


class NeighState(Enum):
    """Life of a neighbour entry. ARP uses the first three; Neighbor Discovery
    (stack/ndp.py) all five of RFC 4861 §7.3.2."""

    INCOMPLETE = "incomplete"
    REACHABLE = "reachable"
    STALE = "stale"
    DELAY = "delay"
    PROBE = "probe"


@dataclass(slots=True)
class PendingFrame:
    """A frame waiting for resolution: a private copy of the Ethernet frame."""

    frame: bytes
    vnet: tuple[int, int, int, int, int, int]
    forwarded: bool


@dataclass(slots=True)
class Neighbour:
    """One cache entry."""

    ip: bytes
    iface: Interface
    mac: bytes | None = None
    state: NeighState = NeighState.INCOMPLETE
    expires: float = 0.0         # REACHABLE -> STALE; STALE -> removed
    next_probe: float = 0.0      # when to send the next request (INCOMPLETE/STALE)
    probes: int = 0
    pending: deque[PendingFrame] = field(default_factory=deque)
    #: RFC 4861 §6.3.4 / §7.2.5: the neighbour said it is a router (IPv6 only).
    is_router: bool = False


class NeighbourCache:
    """Bounded ARP cache for all interfaces (stack/ndp.py's IPv6 cache extends it)."""

    def __init__(self, *, max_entries: int = 1024, reachable_time: float = 30.0,
                 stale_time: float = 600.0, retrans_time: float = 1.0, max_probes: int = 3,
                 max_pending: int = 16) -> None:
        self.max_entries = max_entries
        self.reachable_time = reachable_time
        self.stale_time = stale_time
        self.retrans_time = retrans_time
        self.max_probes = max_probes
        self.max_pending = max_pending
        self.entries: dict[tuple[int, bytes], Neighbour] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, iface: Interface, ip: bytes) -> Neighbour | None:
        """The entry for ``ip`` on ``iface``, if any."""
        return self.entries.get((iface.index, ip))

    def lookup_mac(self, iface: Interface, ip: bytes) -> bytes | None:
        """The usable MAC for ``ip`` (REACHABLE or STALE), else None."""
        n = self.entries.get((iface.index, ip))
        return n.mac if n is not None else None

    def update(self, iface: Interface, ip: bytes, mac: bytes, now: float,
               create: bool) -> Neighbour | None:
        """Record ``ip`` is at ``mac`` (RFC 826 merge); create the entry only if asked.

        Returns the entry; its ``pending`` frames are for the caller to send.
        """
        key = (iface.index, ip)
        n = self.entries.get(key)
        if n is None:
            if not create or not self._make_room(now):
                return None
            n = Neighbour(ip, iface)
            self.entries[key] = n
        n.mac = mac
        n.state = NeighState.REACHABLE
        n.expires = now + self.reachable_time
        n.probes = 0
        return n

    def start_resolution(self, iface: Interface, ip: bytes, now: float) -> Neighbour | None:
        """An INCOMPLETE entry for ``ip`` (new or existing); None when the table is full."""
        key = (iface.index, ip)
        n = self.entries.get(key)
        if n is None:
            if not self._make_room(now):
                return None
            n = Neighbour(ip, iface, next_probe=now)
            self.entries[key] = n
        return n

    def _make_room(self, now: float) -> bool:
        if len(self.entries) < self.max_entries:
            return True
        # Evict the stale entry closest to expiry; never evict one with frames waiting.
        victims = [n for n in self.entries.values()
                   if n.state is NeighState.STALE and not n.pending]
        if not victims:
            return False
        v = min(victims, key=lambda n: n.expires)
        del self.entries[(v.iface.index, v.ip)]
        return True

    def next_deadline(self) -> float | None:
        """Earliest time an entry needs attention."""
        best = None
        for n in self.entries.values():
            t = n.next_probe if n.state is NeighState.INCOMPLETE else n.expires
            if best is None or t < best:
                best = t
        return best

    def expire(self, now: float) -> tuple[list[Neighbour], list[Neighbour]]:
        """Advance timers. Returns (entries to probe now, entries that failed)."""
        probe: list[Neighbour] = []
        failed: list[Neighbour] = []
        for key, n in list(self.entries.items()):
            if n.state is NeighState.INCOMPLETE:
                if n.next_probe > now:
                    continue
                if n.probes >= self.max_probes:
                    del self.entries[key]
                    failed.append(n)
                else:
                    n.probes += 1
                    n.next_probe = now + self.retrans_time
                    probe.append(n)
            elif n.expires <= now:
                if n.state is NeighState.REACHABLE:
                    n.state = NeighState.STALE
                    n.expires = now + self.stale_time
                    n.next_probe = now
                else:
                    del self.entries[key]
        return probe, failed

    def needs_refresh(self, n: Neighbour, now: float) -> bool:
        """Whether using STALE entry ``n`` now should send a revalidation request."""
        if n.state is not NeighState.STALE or n.next_probe > now:
            return False
        n.next_probe = now + self.retrans_time
        return True
