"""A bounded LRU cache of lookup outcomes with expiry on the caller's clock."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most ``size`` entries; an entry put with ``ttl`` at ``now`` is gone from
    ``now + ttl`` on (a lookup at exactly that instant misses). Time is always passed
    in, so the loop's clock (virtual in tests) is the only clock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        """The live value for ``key``, refreshed as most recently used, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float, now: float) -> None:
        """Keep ``value`` for ``ttl`` seconds; a TTL of 0 or less is not cached
        (RFC 1035 §3.2.1: zero means use for this transaction only)."""
        if ttl <= 0 or self.size <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (now + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
