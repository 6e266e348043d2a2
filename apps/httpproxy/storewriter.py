"""The disk store's writes off the event loop: one thread per worker, in order.

A body's write and fsync take milliseconds per MiB (diskstore.py), too long to stall
every connection of a worker for. So a worker hands each store, header refresh and
invalidation to this thread, which runs them one after the other on a connection of
its own; the crash-safe order of the steps inside each is the disk store's. The
queue is bounded in jobs and in body bytes: a store that does not fit is refused
(counted), as if the response had not been storable. An invalidation is never
refused; while one is queued, lookups of its URI find nothing (RFC 9111 §4.4: the
invalidated responses must not be served, not even in the moments before the
thread has deleted them).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from apps.httpproxy.diskstore import DiskStore, StoreError
from apps.httpproxy.storeentry import StoredResponse

log = logging.getLogger("tapsplice.httpproxy.store")

#: Jobs and body bytes queued at most; seconds to wait for the thread at start and stop.
MAX_JOBS = 256
MAX_PENDING_BYTES = 64 << 20
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

Job = tuple[str, object]


class StoreWriter:
    """A thread that runs the disk store's writes in the order they were handed over."""

    def __init__(self, directory: Path, max_bytes: int, max_entries: int, *,
                 clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()          # under _lock
        self._pending_bytes = 0                            # under _lock
        self._invalidating: Counter[str] = Counter()      # under _lock
        # Invalidations may exceed MAX_JOBS a little: they are never refused.
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._queued = 0                                   # under _lock
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(directory, max_bytes, max_entries, clock),
            name="cache-store-writer", daemon=True)
        self._thread.start()
        if not self._opened.wait(START_TIMEOUT):
            raise StoreError(f"cache directory {directory}: the writer did not start")
        if self._error is not None:
            raise self._error

    # -- the event loop's side -------------------------------------------------------------
    def put(self, entry: StoredResponse) -> bool:
        """Queue the store of ``entry``; False (counted) when the queue is full."""
        return self._submit(("put", entry), len(entry.body))

    def replace_head(self, entry: StoredResponse) -> bool:
        """Queue the store of ``entry`` with a freshened head (the body is unchanged)."""
        return self._submit(("replace", entry), len(entry.body))

    def invalidate(self, uri: str) -> None:
        """Queue the removal of every variant of ``uri``; until it has run,
        :meth:`invalidating` is true for ``uri``."""
        self._removal(("invalidate", uri), uri)

    def drop(self, uri: str, vary: str) -> None:
        """Queue the removal of one variant (``vary`` as diskstore.vary_text gives it);
        until it has run, :meth:`invalidating` is true for all of ``uri``."""
        self._removal(("drop", (uri, vary)), uri)

    def _removal(self, job: Job, uri: str) -> None:
        with self._lock:
            self._invalidating[uri] += 1
            self._queued += 1
        self._jobs.put(job)

    def invalidating(self, uri: str) -> bool:
        """Whether an invalidation of ``uri`` is queued or running."""
        with self._lock:
            return self._invalidating[uri] > 0

    def counters(self) -> Counter[str]:
        """A copy of the thread's counters."""
        with self._lock:
            return Counter(self._counters)

    def close(self) -> None:
        """Run what is queued (bounded in time), then stop the thread."""
        self._jobs.put(None)
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            log.warning("cache writer: %d jobs not written at stop", self._jobs.qsize())

    def _submit(self, job: Job, size: int) -> bool:
        with self._lock:
            if self._queued >= MAX_JOBS or self._pending_bytes + size > MAX_PENDING_BYTES:
                self._counters["write_queue_full"] += 1
                return False
            self._queued += 1
            self._pending_bytes += size
        self._jobs.put(job)
        return True

    # -- the thread's side -----------------------------------------------------------------
    def _run(self, directory: Path, max_bytes: int, max_entries: int,
             clock: Callable[[], float]) -> None:
        local: Counter[str] = Counter()
        try:
            # The connection is made here: an SQLite connection stays in its thread.
            disk = DiskStore(directory, max_bytes, max_entries, local, clock=clock,
                             recover=False)
        except BaseException as e:   # reported to the constructor, which raises it
            self._error = e
            self._opened.set()
            return
        self._opened.set()
        try:
            while (job := self._jobs.get()) is not None:
                self._do(disk, job, local)
        finally:
            disk.close()

    def _do(self, disk: DiskStore, job: Job, local: Counter[str]) -> None:
        kind, what = job
        removal = _removal_uri(job)
        size = len(what.body) if isinstance(what, StoredResponse) else 0
        try:
            if kind == "invalidate" and isinstance(what, str):
                disk.invalidate(what)
            elif kind == "drop" and isinstance(what, tuple):
                disk.drop(*what)
            elif kind == "put" and isinstance(what, StoredResponse):
                disk.put(what)
            elif kind == "replace" and isinstance(what, StoredResponse):
                disk.replace_head(what)
        except Exception:   # the store counts its own errors; this keeps the thread alive
            log.exception("cache writer: %s", kind)
            local["writer_errors"] += 1
        finally:
            with self._lock:
                self._counters.update(local)
                local.clear()
                self._queued -= 1
                self._pending_bytes -= size
                if removal is not None:
                    self._invalidating[removal] -= 1
                    if not self._invalidating[removal]:
                        del self._invalidating[removal]


def _removal_uri(job: Job) -> str | None:
    """The URI a removal job hides while queued (None for a store)."""
    kind, what = job
    if kind == "invalidate" and isinstance(what, str):
        return what
    if kind == "drop" and isinstance(what, tuple):
        return str(what[0])
    return None
