"""The disk half of the cache: one store for every worker, safe against ``kill -9``.

Layout of the cache directory:

- ``cache.sqlite3`` (with its ``-wal`` and ``-shm`` files): the index, one row per
  stored response (request URI, secondary key, head as JSON, body file name, body
  length and BLAKE2b digest, size counted against the bound, last access time);
- ``<32 hex>.entry``: one body per file, immutable once in place;
- ``<32 hex>.tmp``: a body being written.

Crash safety comes from the order of the steps. A body is written under a temporary
name, flushed to disk (fsync), renamed to its final name, and only then is its row
committed; a row is deleted (committed) before its file is unlinked. So at any moment
a committed row names a complete file, and a ``kill -9`` leaves at worst a temporary
file or a file without a row, which the next start removes. A read checks the body's
length and digest against the row, so a file damaged on disk is dropped (counted in
``disk_errors``), never served.

Every worker opens the same database. SQLite in WAL mode lets readers run while one
process writes; writers take turns (``BEGIN IMMEDIATE``) and wait up to
:data:`BUSY_TIMEOUT` for each other. The byte bound and the least-recently-used order
are the database's: the totals row is kept by triggers in the same transactions as
the rows, and eviction takes the oldest ``atime`` first. Access times are written in
batches (:data:`TOUCH_BATCH`, :data:`TOUCH_INTERVAL`), so the LRU order across workers
is exact up to that lag.

The event loop: these calls are synchronous. Each query is a point lookup or a range
on an index (``(uri, vary)`` unique, ``atime``) and returns at most a few rows, and
each write transaction holds the lock for a few statements, with no file I/O inside
it, so a worker waits for another for well under a millisecond in the common case
(at most :data:`BUSY_TIMEOUT`, then the operation fails, counted). The slow part, a
body's write and fsync on a store (about 4 ms per MiB measured on this machine's
disk), runs in the worker's writer thread (storewriter.py), not on its loop. What
stays on the loop is bounded: reading and hashing a body on a miss of the worker's
memory cache (at most ``--max-object``, once per object and worker while it stays
in memory), the batched access-time updates, and the start-up recovery, which scans
every row and file before any request is served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from apps.httpproxy.storeentry import MAX_VARIANTS, StoredResponse, entry_from_json

log = logging.getLogger("tapsplice.httpproxy.store")

DB_NAME = "cache.sqlite3"
#: PRAGMA user_version of the schema below; another value is refused at start.
SCHEMA_VERSION = 1
#: Seconds a worker waits for another's write lock before giving up the operation
#: (its writer thread; the event loop's own writes, access times, wait less).
BUSY_TIMEOUT = 2.0
LOOP_BUSY_TIMEOUT = 0.25
#: Access times are written once this many are pending, or this many seconds passed.
TOUCH_BATCH = 64
TOUCH_INTERVAL = 1.0
#: Rows looked at per eviction query.
EVICT_BATCH = 16
DIGEST_SIZE = 16
BODY_SUFFIX = ".entry"
TEMP_SUFFIX = ".tmp"
_BODY_NAME = re.compile(r"[0-9a-f]{32}\.entry\Z")
#: Files of the old per-worker layout (index.json and its entries), removed at start.
_LEGACY_NAMES = ("index.json", "index.json.tmp")
_LEGACY_WORKER_DIR = re.compile(r"worker[0-9]+\Z")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uri TEXT NOT NULL,
    vary TEXT NOT NULL,
    head TEXT NOT NULL,
    file TEXT NOT NULL UNIQUE,
    length INTEGER NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    atime REAL NOT NULL,
    UNIQUE (uri, vary)
);
CREATE INDEX IF NOT EXISTS entries_by_atime ON entries (atime);
CREATE TABLE IF NOT EXISTS totals (
    one INTEGER PRIMARY KEY CHECK (one = 0),
    bytes INTEGER NOT NULL,
    count INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    UPDATE totals SET bytes = bytes + NEW.size, count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN
    UPDATE totals SET bytes = bytes - OLD.size, count = count - 1;
END;
"""


class StoreError(OSError):
    """The cache directory cannot be used (a damaged or foreign index): a start-up error."""


@dataclass(frozen=True)
class Row:
    """One index row as :meth:`DiskStore.rows` returns it (no body)."""

    id: int
    uri: str
    vary: str
    head: str
    file: str
    length: int
    digest: bytes


def vary_text(vary_key: tuple[tuple[str, str], ...]) -> str:
    """The secondary key as the index stores it (JSON: one text per key)."""
    return json.dumps([list(p) for p in vary_key])


def body_digest(body: bytes) -> bytes:
    """The digest a row keeps of its body."""
    return hashlib.blake2b(body, digest_size=DIGEST_SIZE).digest()


class DiskStore:
    """The shared index and body files of one cache directory."""

    def __init__(self, directory: str | Path, max_bytes: int, max_entries: int,
                 counters: Counter[str], *, clock: Callable[[], float],
                 recover: bool = True, busy_timeout: float | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.counters = counters
        self.clock = clock
        self._touched: dict[tuple[str, str], float] = {}
        self._touch_flushed = clock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cache directory {self.directory}: {e.strerror}") from e
        self.db = self._open(recover, BUSY_TIMEOUT if busy_timeout is None else busy_timeout)
        if recover:
            try:
                self.recover()
            except (OSError, sqlite3.Error) as e:
                self.db.close()
                raise StoreError(f"cache directory {self.directory}: {e}") from e

    # -- opening and recovery --------------------------------------------------------------
    def _open(self, check: bool, busy_timeout: float) -> sqlite3.Connection:
        path = self.directory / DB_NAME
        db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
            db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"cache index {path} has schema {version}, not "
                                 f"{SCHEMA_VERSION}: remove the directory or use another")
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: WAL commits are not fsynced one by one. A process crash loses
            # nothing (the OS has the pages); a power loss may lose the last commits,
            # which leaves files without rows, removed at the next start.
            db.execute("PRAGMA synchronous=NORMAL")
            if version == 0:   # a new index; opening an existing one takes no write lock
                db.executescript(SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            if check:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise sqlite3.DatabaseError(verdict)
        except sqlite3.Error as e:
            if db is not None:
                db.close()
            raise StoreError(f"cache index {path} is damaged ({e}): remove it (the "
                             "bodies beside it are then removed at start)") from e
        except StoreError:
            if db is not None:
                db.close()
            raise
        return db

    def recover(self) -> None:
        """Bring the directory back to "every row names a complete file, every file has
        a row" after a crash: drop temporary files, files without a row, rows whose file
        is missing or of the wrong length, the old layout's files; recount the totals and
        evict down to the bound (it may have been lowered since)."""
        self._remove_legacy()
        names = self._list_files()
        rows = self.db.execute("SELECT id, file, length FROM entries").fetchall()
        broken = [(rid, file) for rid, file, length in rows
                  if names.get(file) != length or not _BODY_NAME.match(str(file))]
        known = {file for _rid, file, _len in rows} - {file for _rid, file in broken}
        with self._tx() as db:
            db.executemany("DELETE FROM entries WHERE id = ?", [(r,) for r, _f in broken])
            db.execute("UPDATE totals SET bytes = (SELECT COALESCE(SUM(size), 0) FROM "
                       "entries), count = (SELECT COUNT(*) FROM entries)")
            evicted = self._evict(db, 0, 0)
        self.counters["recovered_rows"] += len(broken)
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                self.counters["recovered_temp"] += 1
                self._unlink(name)
            elif name not in known:
                self.counters["recovered_orphans"] += 1
                self._unlink(name)
        for name in evicted:
            self._unlink(name)

    def _list_files(self) -> dict[str, int]:
        """Body and temporary files in the directory, with their lengths."""
        out = {}
        for item in os.scandir(self.directory):
            if item.name.endswith((BODY_SUFFIX, TEMP_SUFFIX)) and item.is_file():
                with contextlib.suppress(OSError):
                    out[item.name] = item.stat().st_size
        return out

    def _remove_legacy(self) -> None:
        """The per-worker layout (``index.json`` and ``<sha256>.entry`` files, in the
        directory or in ``workerN/``) is not migrated; its files are removed."""
        dirs = [self.directory] + [p for p in self.directory.iterdir()
                                   if p.is_dir() and _LEGACY_WORKER_DIR.match(p.name)]
        for d in dirs:
            for name in _LEGACY_NAMES:
                (d / name).unlink(missing_ok=True)
            if d is not self.directory:
                for p in d.iterdir():
                    if p.suffix in (BODY_SUFFIX, TEMP_SUFFIX):
                        p.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    d.rmdir()   # only when empty: anything else there is not ours

    def close(self) -> None:
        """Write pending access times and close the index."""
        with contextlib.suppress(sqlite3.Error):
            self._flush_touches()
        self.db.close()

    # -- reads -----------------------------------------------------------------------------
    def rows(self, uri: str) -> list[Row]:
        """The rows of ``uri``'s variants, most recently used first (one indexed query)."""
        try:
            found = self.db.execute(
                "SELECT id, uri, vary, head, file, length, digest FROM entries WHERE uri = ? "
                "ORDER BY atime DESC LIMIT ?", (uri, 2 * MAX_VARIANTS)).fetchall()
        except sqlite3.Error as e:
            self._index_error("read", e)
            return []
        return [Row(*r) for r in found]

    def load(self, row: Row) -> StoredResponse | None:
        """The stored response of ``row`` with its body, checked against the row's length
        and digest; a damaged entry is dropped and counted."""
        if not (isinstance(row.length, int) and isinstance(row.digest, bytes)
                and isinstance(row.file, str) and _BODY_NAME.match(row.file)
                and isinstance(row.head, str) and isinstance(row.vary, str)):
            self._drop_damaged(row, "bad row")   # an index damaged but still readable
            return None
        try:
            with open(self.directory / row.file, "rb") as f:
                body = f.read(row.length + 1)
        except FileNotFoundError:
            # Evicted or replaced by another worker since the query, or lost on disk;
            # only in the last case is the row still there to drop.
            self._drop_damaged(row, "missing")
            return None
        except OSError as e:
            self._drop_damaged(row, e.strerror or "unreadable")
            return None
        if len(body) != row.length or body_digest(body) != row.digest:
            self._drop_damaged(row, "length or digest differs")
            return None
        try:
            item = json.loads(row.head)
        except ValueError:
            item = None
        entry = entry_from_json(item, body)
        if entry is None or entry.uri != row.uri or vary_text(entry.vary_key) != row.vary:
            self._drop_damaged(row, "bad head")
            return None
        return entry

    def _drop_damaged(self, row: Row, why: str) -> None:
        if self._delete_row(row):
            log.warning("cache entry %s for %s dropped: %s", row.file, row.uri, why)
            self.counters["disk_errors"] += 1

    def _delete_row(self, row: Row) -> bool:
        """Delete ``row`` (this version only) and its file; whether it was still there."""
        try:
            with self._tx() as db:
                gone = db.execute("DELETE FROM entries WHERE id = ?", (row.id,)).rowcount
        except sqlite3.Error as e:
            self._index_error("drop", e)
            return False
        if gone:
            self._unlink(row.file)
        return bool(gone)

    @property
    def totals(self) -> tuple[int, int]:
        """(bytes, entries) stored, from the totals row."""
        try:
            found = self.db.execute("SELECT bytes, count FROM totals").fetchone()
        except sqlite3.Error as e:
            self._index_error("read", e)
            return 0, 0
        return (int(found[0]), int(found[1])) if found else (0, 0)

    # -- writes ----------------------------------------------------------------------------
    def put(self, entry: StoredResponse) -> int | None:
        """Store ``entry`` (replacing the same URI and secondary key): its row id, or None
        when it could not be written (counted)."""
        name = os.urandom(16).hex() + BODY_SUFFIX
        if not self._write_body(name, entry.body):
            return None
        rid = self._index(entry, name, body_digest(entry.body))
        if rid is None:
            self._unlink(name)
        return rid

    def replace_head(self, entry: StoredResponse) -> int | None:
        """Store ``entry`` whose body is already stored under its key (a 304 freshened
        it, RFC 9111 §4.3.4): only the row is rewritten; else a full :meth:`put`."""
        digest = body_digest(entry.body)
        try:
            found = self.db.execute(
                "SELECT file FROM entries WHERE uri = ? AND vary = ? AND length = ? AND "
                "digest = ?", (entry.uri, vary_text(entry.vary_key), len(entry.body),
                               digest)).fetchone()
        except sqlite3.Error as e:
            self._index_error("read", e)
            return None
        if found is None:
            return self.put(entry)
        return self._index(entry, found[0], digest)

    def _write_body(self, name: str, body: bytes) -> bool:
        """The body under a temporary name, flushed, then renamed to ``name``."""
        tmp = self.directory / (name[:-len(BODY_SUFFIX)] + TEMP_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.directory / name)
        except OSError as e:
            log.warning("cache write %s: %s", tmp, e)
            self.counters["disk_errors"] += 1
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        return True

    def _index(self, entry: StoredResponse, name: str, digest: bytes) -> int | None:
        """Commit the row of ``entry`` whose body is in ``name``, making room first."""
        vary = vary_text(entry.vary_key)
        dropped: list[str] = []
        try:
            with self._tx() as db:
                self._write_touches(db)
                dropped += self._remove(db, "uri = ? AND vary = ?", (entry.uri, vary))
                dropped += self._bound_variants(db, entry.uri)
                dropped += self._evict(db, entry.size)
                rid = db.execute(
                    "INSERT INTO entries (uri, vary, head, file, length, digest, size, "
                    "atime) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry.uri, vary, json.dumps(entry.head_json()), name,
                     len(entry.body), digest, entry.size, self.clock())).lastrowid
        except sqlite3.Error as e:
            self._index_error("write", e)
            return None
        for file in dropped:
            if file != name:
                self._unlink(file)
        return rid

    def _remove(self, db: sqlite3.Connection, where: str, args: tuple) -> list[str]:
        """Delete the rows matching ``where``; their files (to unlink after the commit)."""
        files = [f for (f,) in db.execute(f"SELECT file FROM entries WHERE {where}", args)]
        db.execute(f"DELETE FROM entries WHERE {where}", args)
        return files

    def _bound_variants(self, db: sqlite3.Connection, uri: str) -> list[str]:
        """Room for one more variant of ``uri``: at most MAX_VARIANTS are kept."""
        old = db.execute("SELECT id, file FROM entries WHERE uri = ? ORDER BY atime",
                         (uri,)).fetchall()
        extra = old[:max(0, len(old) - MAX_VARIANTS + 1)]
        db.executemany("DELETE FROM entries WHERE id = ?", [(rid,) for rid, _f in extra])
        return [f for _rid, f in extra]

    def _evict(self, db: sqlite3.Connection, room: int, entries: int = 1) -> list[str]:
        """Delete least recently used rows until ``room`` more bytes and ``entries``
        more entries fit; the files to unlink once committed."""
        total, count = db.execute("SELECT bytes, count FROM totals").fetchone()
        files: list[str] = []
        limit = self.max_entries - entries
        while count and (total + room > self.max_bytes or count > limit):
            oldest = db.execute("SELECT id, file, size FROM entries ORDER BY atime LIMIT ?",
                                (EVICT_BATCH,)).fetchall()
            if not oldest:
                break
            for rid, file, size in oldest:
                if not (total + room > self.max_bytes or count > limit):
                    break
                db.execute("DELETE FROM entries WHERE id = ?", (rid,))
                total, count = total - size, count - 1
                files.append(file)
                self.counters["evicted"] += 1
        return files

    def invalidate(self, uri: str) -> int:
        """Drop every variant of ``uri``; how many were dropped."""
        return self._remove_now("uri = ?", (uri,))

    def drop(self, uri: str, vary: str) -> int:
        """Drop the entry of ``uri`` with secondary key ``vary`` (as :func:`vary_text`)."""
        return self._remove_now("uri = ? AND vary = ?", (uri, vary))

    def _remove_now(self, where: str, args: tuple) -> int:
        try:
            with self._tx() as db:
                files = self._remove(db, where, args)
        except sqlite3.Error as e:
            self._index_error("write", e)
            return 0
        for file in files:
            self._unlink(file)
        return len(files)

    def touch(self, uri: str, vary: str) -> None:
        """Note an access; written with the next batch (see the module docstring)."""
        now = self.clock()
        self._touched[(uri, vary)] = now
        if len(self._touched) >= TOUCH_BATCH or now - self._touch_flushed >= TOUCH_INTERVAL:
            self._flush_touches()

    def _flush_touches(self) -> None:
        if not self._touched:
            return
        try:
            with self._tx() as db:
                self._write_touches(db)
        except sqlite3.Error as e:
            self._index_error("write", e)
            self._touched.clear()

    def _write_touches(self, db: sqlite3.Connection) -> None:
        db.executemany("UPDATE entries SET atime = ? WHERE uri = ? AND vary = ? AND atime < ?",
                       [(t, u, v, t) for (u, v), t in self._touched.items()])
        self._touched.clear()
        self._touch_flushed = self.clock()

    # -- helpers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; rolled back on any error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise

    def _index_error(self, what: str, e: sqlite3.Error) -> None:
        log.warning("cache index %s: %s", what, e)
        self.counters["index_errors"] += 1

    def _unlink(self, name: str) -> None:
        """Remove a body or temporary file of this directory; a name from a damaged row
        that is not one (a path, the index itself) is left alone."""
        if not isinstance(name, str) or "/" in name or \
                not name.endswith((BODY_SUFFIX, TEMP_SUFFIX)):
            return
        with contextlib.suppress(OSError):
            os.unlink(self.directory / name)
