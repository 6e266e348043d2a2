"""The cache's storage: stored responses, bounded in bytes, least recently used first out.

Entries are keyed by the request URI plus the secondary key of the response's Vary
fields (RFC 9111 §4.1); one URI holds at most MAX_VARIANTS variants.

Without a directory the store is a memory LRU of its own in each process. With one,
the responses live in a disk store shared by every worker (apps/httpproxy/diskstore.py:
an SQLite index and one file per body, safe against ``kill -9``), and each worker
keeps a smaller memory LRU of bodies in front of it. The memory copy is used only
while the index row it was read from is still the current one (same row id), so an
entry replaced, evicted or invalidated by another worker is never served from memory. With ``background``, the
writes go to a thread of the worker (apps/httpproxy/storewriter.py), off its event loop.
"""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

from apps.httpproxy.cache import stored_head
from apps.httpproxy.diskstore import LOOP_BUSY_TIMEOUT, DiskStore, StoreError, vary_text
from apps.httpproxy.parser import Headers
from apps.httpproxy.storeentry import (
    ENTRY_OVERHEAD,
    MAX_VARIANTS,
    StoredResponse,
    VaryKey,
    entry_from_json,
)
from apps.httpproxy.storewriter import StoreWriter

__all__ = ["ENTRY_OVERHEAD", "MAX_VARIANTS", "CacheStore", "MemoryLRU", "StoreError",
           "StoredResponse", "VaryKey", "entry_from_json"]

#: Default bound of a worker's memory cache in front of a disk store.
DEFAULT_MEMORY_BYTES = 16 << 20

Key = tuple[str, VaryKey]


class MemoryLRU:
    """Stored responses in memory, bounded in bytes and entries, LRU first out. Each
    entry carries a ``tag``: the disk row it was read from (0 without a disk store)."""

    def __init__(self, max_bytes: int, max_entries: int, counters: Counter[str]) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.counters = counters
        self._entries: OrderedDict[Key, tuple[int, StoredResponse]] = OrderedDict()
        # uri -> its variants' secondary keys, least recently used first.
        self._by_uri: dict[str, dict[VaryKey, None]] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> tuple[int, StoredResponse] | None:
        """The (tag, entry) stored under ``key``."""
        return self._entries.get(key)

    def variants(self, uri: str) -> list[StoredResponse]:
        """Every variant of ``uri``, most recent first."""
        return [self._entries[(uri, v)][1] for v in reversed(self._by_uri.get(uri, {}))]

    def touch(self, key: Key) -> None:
        """Mark an entry as just used."""
        if key in self._entries:
            self._entries.move_to_end(key)
            variants = self._by_uri[key[0]]
            variants[key[1]] = variants.pop(key[1])

    def put(self, entry: StoredResponse, tag: int = 0) -> bool:
        """Keep ``entry`` (replacing its key); False if it is larger than the bound."""
        key = entry.key
        self.drop(key)
        if entry.size > self.max_bytes:
            return False
        same_uri = [(entry.uri, v) for v in self._by_uri.get(entry.uri, {})]
        for old in same_uri[:max(0, len(same_uri) - MAX_VARIANTS + 1)]:
            self.drop(old)
        while self._entries and (self.bytes + entry.size > self.max_bytes
                                 or len(self._entries) >= self.max_entries):
            self.drop(next(iter(self._entries)))
            self.counters["evicted"] += 1
        self._entries[key] = (tag, entry)
        self._by_uri.setdefault(entry.uri, {})[entry.vary_key] = None
        self.bytes += entry.size
        return True

    def drop(self, key: Key) -> bool:
        """Forget ``key``; whether it was there."""
        found = self._entries.pop(key, None)
        if found is None:
            return False
        variants = self._by_uri[key[0]]
        del variants[key[1]]
        if not variants:
            del self._by_uri[key[0]]
        self.bytes -= found[1].size
        return True

    def invalidate(self, uri: str, keep: frozenset[VaryKey] = frozenset()) -> int:
        """Drop the variants of ``uri`` (except ``keep``); how many were dropped."""
        gone = [v for v in self._by_uri.get(uri, {}) if v not in keep]
        for v in gone:
            self.drop((uri, v))
        return len(gone)


class CacheStore:
    """A bounded LRU of stored responses, in memory or in a directory shared by workers."""

    def __init__(self, max_bytes: int = 64 << 20, max_object: int = 8 << 20,
                 directory: str | Path | None = None, max_entries: int = 100_000, *,
                 memory_bytes: int | None = None, recover: bool = True,
                 background: bool = False, clock: Callable[[], float] = time.time) -> None:
        """``memory_bytes`` bounds the memory cache in front of ``directory`` (default
        the smaller of 16 MiB and ``max_bytes``); ``recover`` runs the start-up
        recovery of the directory (a supervisor does it once before its workers start);
        ``background`` writes to the directory from a thread (:meth:`close` then
        finishes what is queued). A directory that cannot be used raises
        :class:`StoreError`."""
        if max_bytes < 0 or max_object < 0 or max_entries < 1 or (memory_bytes or 0) < 0:
            raise ValueError("cache bounds must be non-negative")
        self.max_bytes = max_bytes
        self.max_object = min(max_object, max_bytes)
        self.max_entries = max_entries
        self.directory = Path(directory) if directory is not None else None
        self._counters: Counter[str] = Counter()
        self._disk: DiskStore | None = None
        self._writer: StoreWriter | None = None
        if self.directory is None:
            self._memory = MemoryLRU(max_bytes, max_entries, self._counters)
        else:
            front = DEFAULT_MEMORY_BYTES if memory_bytes is None else memory_bytes
            #: The memory cache's own counters (its evictions are not the store's).
            self.memory_counters: Counter[str] = Counter()
            self._memory = MemoryLRU(min(front, max_bytes), max_entries, self.memory_counters)
            # With the writer thread, the loop's own writes are access times and drops
            # of damaged entries: they wait for another worker's lock only briefly.
            self._disk = DiskStore(self.directory, max_bytes, max_entries, self._counters,
                                   clock=clock, recover=recover,
                                   busy_timeout=LOOP_BUSY_TIMEOUT if background else None)
            if background:
                try:
                    self._writer = StoreWriter(self.directory, max_bytes, max_entries,
                                               clock=clock)
                except StoreError:
                    self._disk.close()
                    raise

    @property
    def counters(self) -> Counter[str]:
        """What happened: stored, evicted, too_large, disk_errors (entries dropped as
        damaged or not written), index_errors, recovered_*, write_queue_full."""
        if self._writer is None:
            return self._counters
        return self._counters + self._writer.counters()

    @property
    def on_disk(self) -> bool:
        """Whether entries are kept in files."""
        return self._disk is not None

    @property
    def bytes(self) -> int:
        """Bytes stored, counted as :attr:`StoredResponse.size` (all workers' with a disk)."""
        return self._memory.bytes if self._disk is None else self._disk.totals[0]

    def __len__(self) -> int:
        return len(self._memory) if self._disk is None else self._disk.totals[1]

    def __bool__(self) -> bool:
        """A store is true even when empty (``if cache:`` asks whether there is one, and
        must not cost a query of the shared index)."""
        return True

    def variants(self, uri: str) -> list[StoredResponse]:
        """Every stored variant of ``uri`` (bodies read from disk), most recent first."""
        if self._disk is None:
            return self._memory.variants(uri)
        if self._writer is not None and self._writer.invalidating(uri):
            return []
        out = []
        rows = self._disk.rows(uri)
        current = set()
        for row in rows:
            held = self._memory.get((uri, _vary_key(row.vary)))
            if held is not None and held[0] == row.id:
                entry: StoredResponse | None = held[1]
            else:
                entry = self._disk.load(row)
                if entry is not None:
                    self._memory.put(entry, row.id)
            if entry is not None:
                out.append(entry)
                current.add(entry.vary_key)
        # Replaced or dropped by another worker: the memory copies are stale.
        self._memory.invalidate(uri, frozenset(current))
        return out

    def touch(self, entry: StoredResponse) -> None:
        """Mark an entry as just used (LRU)."""
        self._memory.touch(entry.key)
        if self._disk is not None:
            self._disk.touch(entry.uri, vary_text(entry.vary_key))

    def put(self, entry: StoredResponse) -> bool:
        """Store (or replace) an entry; False if it is larger than the per-object limit
        or could not be written. Its head is made to match its body
        (:func:`~apps.httpproxy.cache.stored_head`)."""
        entry.headers = stored_head(entry.headers, entry.status, len(entry.body))
        if entry.size > self.max_object:
            self._counters["too_large"] += 1
            self._forget(entry.uri, entry.vary_key)
            return False
        if self._writer is not None:
            return self._queued(entry, self._writer.put(entry))
        # With a disk store, the memory copy is made when the body is first read back
        # (and checked): the body just written is not kept twice.
        return self._keep(entry, None if self._disk is None else self._disk.put(entry),
                          in_memory=self._disk is None)

    def replace_headers(self, entry: StoredResponse, headers: Headers,
                        request_time: float, response_time: float) -> StoredResponse:
        """Store ``entry`` with freshened headers and times (RFC 9111 §4.3.4)."""
        fresh = StoredResponse(entry.uri, entry.vary_key, entry.status, entry.reason,
                               headers, entry.body, request_time, response_time)
        fresh.headers = stored_head(fresh.headers, fresh.status, len(fresh.body))
        if fresh.size > self.max_object:
            self._counters["too_large"] += 1
            self._forget(fresh.uri, fresh.vary_key)
        elif self._writer is not None:
            self._queued(fresh, self._writer.replace_head(fresh))
        else:
            self._keep(fresh, None if self._disk is None else self._disk.replace_head(fresh))
        return fresh

    def invalidate(self, uri: str) -> int:
        """Drop every variant of ``uri``; how many were dropped."""
        dropped = self._memory.invalidate(uri)
        if self._disk is None:
            return dropped
        if self._writer is None:
            return self._disk.invalidate(uri)
        found = len(self._disk.rows(uri))   # what the queued job will find, give or take
        self._writer.invalidate(uri)
        return found

    def close(self) -> None:
        """Write what is pending and close the disk store (nothing to do in memory)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._disk is not None:
            self._disk.close()

    # -- internals -----------------------------------------------------------------------
    def _keep(self, entry: StoredResponse, row_id: int | None, in_memory: bool = True) -> bool:
        self._memory.drop(entry.key)
        if self._disk is not None and row_id is None:   # not written: counted already
            return False
        if in_memory:
            self._memory.put(entry, row_id or 0)
        self._counters["stored"] += 1
        return True

    def _queued(self, entry: StoredResponse, accepted: bool) -> bool:
        """A write handed to the thread: the memory copy of the old version goes."""
        self._memory.drop(entry.key)
        if accepted:
            self._counters["stored"] += 1
        return accepted

    def _forget(self, uri: str, vary_key: VaryKey) -> None:
        self._memory.drop((uri, vary_key))
        if self._writer is not None:
            self._writer.drop(uri, vary_text(vary_key))   # in order with queued writes
        elif self._disk is not None:
            self._disk.drop(uri, vary_text(vary_key))


def _vary_key(text: str) -> VaryKey:
    """The secondary key of an index row (see :func:`~apps.httpproxy.diskstore.vary_text`)."""
    try:
        return tuple((str(n), str(v)) for n, v in json.loads(text))
    except (TypeError, ValueError):
        return ()
