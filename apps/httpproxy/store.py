"""The cache's storage: stored responses, bounded in bytes, least recently used first out.

Entries are keyed by the request URI plus the secondary key of the response's Vary
fields (RFC 9111 §4.1); one URI holds at most MAX_VARIANTS variants. With a
directory, bodies live in files (one per entry: a JSON head line, then the body) and
``index.json`` lists the entries in LRU order, so the cache survives a restart;
memory then holds only the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from apps.httpproxy.cache import stored_head
from apps.httpproxy.parser import Headers

log = logging.getLogger("tapsplice.httpproxy.store")

MAX_VARIANTS = 8
#: Per-entry overhead counted against the byte bound (head, bookkeeping).
ENTRY_OVERHEAD = 256
INDEX = "index.json"
#: An index (or entry head) larger than this is not read: a damaged file is dropped.
MAX_INDEX_BYTES = 64 << 20
MAX_HEAD_BYTES = 1 << 20

VaryKey = tuple[tuple[str, str], ...]


@dataclass
class StoredResponse:
    """One stored response: its head, body and the times of §4.2.3."""

    uri: str
    vary_key: VaryKey
    status: int
    reason: str
    headers: Headers
    body: bytes
    request_time: float
    response_time: float

    @property
    def size(self) -> int:
        """Bytes counted against the store's bound."""
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) \
            + ENTRY_OVERHEAD

    def head_json(self) -> dict:
        """The entry without its body, as JSON-able data."""
        return {"uri": self.uri, "vary_key": [list(p) for p in self.vary_key],
                "status": self.status, "reason": self.reason,
                "headers": [list(f) for f in self.headers],
                "request_time": self.request_time, "response_time": self.response_time,
                "body_len": len(self.body)}


class CacheStore:
    """A bounded LRU of stored responses, in memory or in a directory."""

    def __init__(self, max_bytes: int = 64 << 20, max_object: int = 8 << 20,
                 directory: str | Path | None = None, max_entries: int = 100_000) -> None:
        if max_bytes < 0 or max_object < 0 or max_entries < 1:
            raise ValueError("cache bounds must be non-negative")
        self.max_bytes = max_bytes
        self.max_object = min(max_object, max_bytes)
        self.max_entries = max_entries
        self.directory = Path(directory) if directory is not None else None
        # (uri, vary_key) -> entry (memory) or its head without body (disk), LRU order.
        self._entries: OrderedDict[tuple[str, VaryKey], StoredResponse] = OrderedDict()
        self._sizes: dict[tuple[str, VaryKey], int] = {}
        self._body_lens: dict[tuple[str, VaryKey], int] = {}   # disk mode only
        # uri -> its variants' secondary keys, least recently used first.
        self._by_uri: dict[str, dict[VaryKey, None]] = {}
        self.bytes = 0
        self.counters: Counter[str] = Counter()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()

    @property
    def on_disk(self) -> bool:
        """Whether entries are kept in files."""
        return self.directory is not None

    def __len__(self) -> int:
        return len(self._entries)

    def variants(self, uri: str) -> list[StoredResponse]:
        """Every stored variant of ``uri`` (bodies read from disk), most recent first."""
        keys = [(uri, v) for v in reversed(self._by_uri.get(uri, {}))]
        out = []
        for key in keys:
            entry = self._read(key)
            if entry is not None:
                out.append(entry)
        return out

    def touch(self, entry: StoredResponse) -> None:
        """Mark an entry as just used (LRU)."""
        key = (entry.uri, entry.vary_key)
        if key in self._entries:
            self._entries.move_to_end(key)
            variants = self._by_uri[entry.uri]
            variants[entry.vary_key] = variants.pop(entry.vary_key)
            self._save_index()

    def put(self, entry: StoredResponse) -> bool:
        """Store (or replace) an entry; False if it is larger than the per-object limit.
        Its head is made to match its body (:func:`~apps.httpproxy.cache.stored_head`)."""
        entry.headers = stored_head(entry.headers, entry.status, len(entry.body))
        key = (entry.uri, entry.vary_key)
        self._drop(key)
        if entry.size > self.max_object:
            self.counters["too_large"] += 1
            return False
        same_uri = [(entry.uri, v) for v in self._by_uri.get(entry.uri, {})]
        for old in same_uri[:max(0, len(same_uri) - MAX_VARIANTS + 1)]:
            self._drop(old)
        while self._entries and (self.bytes + entry.size > self.max_bytes
                                 or len(self._entries) >= self.max_entries):
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.counters["evicted"] += 1
        if self.directory is not None:
            if not self._write(key, entry):
                return False
            entry = StoredResponse(**{**entry.__dict__, "body": b""})
        self._entries[key] = entry
        self._by_uri.setdefault(entry.uri, {})[entry.vary_key] = None
        self._sizes[key] = self._entry_size(key, entry)
        self.bytes += self._sizes[key]
        self.counters["stored"] += 1
        self._save_index()
        return True

    def replace_headers(self, entry: StoredResponse, headers: Headers,
                        request_time: float, response_time: float) -> StoredResponse:
        """Store ``entry`` with freshened headers and times (RFC 9111 §4.3.4)."""
        fresh = StoredResponse(entry.uri, entry.vary_key, entry.status, entry.reason,
                               headers, entry.body, request_time, response_time)
        self.put(fresh)
        return fresh

    def invalidate(self, uri: str) -> int:
        """Drop every variant of ``uri``; how many were dropped."""
        keys = [(uri, v) for v in self._by_uri.get(uri, {})]
        for key in keys:
            self._drop(key)
        if keys:
            self._save_index()
        return len(keys)

    # -- internals -----------------------------------------------------------------------
    def _entry_size(self, key: tuple[str, VaryKey], entry: StoredResponse) -> int:
        if self.directory is None:
            return entry.size
        return entry.size + self._body_lens.get(key, 0)

    def _drop(self, key: tuple[str, VaryKey]) -> None:
        if self._entries.pop(key, None) is None:
            return
        variants = self._by_uri[key[0]]
        del variants[key[1]]
        if not variants:
            del self._by_uri[key[0]]
        self.bytes -= self._sizes.pop(key, 0)
        if self.directory is not None:
            self._body_lens.pop(key, None)
            try:
                self._path(key).unlink()
            except OSError:
                pass

    def _path(self, key: tuple[str, VaryKey]) -> Path:
        assert self.directory is not None
        digest = hashlib.sha256(json.dumps([key[0], key[1]]).encode()).hexdigest()
        return self.directory / f"{digest}.entry"

    def _write(self, key: tuple[str, VaryKey], entry: StoredResponse) -> bool:
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(entry.head_json()).encode() + b"\n")
                f.write(entry.body)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cache write %s: %s", path, e)
            self.counters["disk_errors"] += 1
            return False
        self._body_lens[key] = len(entry.body)
        return True

    def _read(self, key: tuple[str, VaryKey]) -> StoredResponse | None:
        entry = self._entries[key]
        if self.directory is None:
            return entry
        loaded = _read_entry(self._path(key))
        if loaded is None:
            self.counters["disk_errors"] += 1
            self._drop(key)
            return None
        return loaded

    def _save_index(self) -> None:
        if self.directory is None:
            return
        index = [e.head_json() for e in self._entries.values()]
        for item, key in zip(index, self._entries, strict=True):
            item["body_len"] = self._body_lens.get(key, 0)
        tmp = self.directory / (INDEX + ".tmp")
        try:
            tmp.write_text(json.dumps(index))
            os.replace(tmp, self.directory / INDEX)
        except OSError as e:
            log.warning("cache index: %s", e)
            self.counters["disk_errors"] += 1

    def _load(self) -> None:
        """Read the index; entries whose file is missing are forgotten, files not in
        the index are removed (a crash between writing a file and the index)."""
        assert self.directory is not None
        index_path = self.directory / INDEX
        items: list = []
        try:
            if index_path.stat().st_size <= MAX_INDEX_BYTES:
                items = json.loads(index_path.read_text())
        except (OSError, ValueError):
            items = []
        for item in items if isinstance(items, list) else []:
            entry = _entry_from_json(item, b"")
            if entry is None:
                continue
            key = (entry.uri, entry.vary_key)
            body_len = item.get("body_len", 0)
            size = entry.size + body_len
            if key in self._entries or not self._path(key).exists() or self.bytes + size > self.max_bytes \
                    or len(self._entries) >= self.max_entries:
                continue
            self._entries[key] = entry
            self._by_uri.setdefault(entry.uri, {})[entry.vary_key] = None
            self._body_lens[key] = body_len
            self._sizes[key] = size
            self.bytes += size
        known = {self._path(k).name for k in self._entries} | {INDEX}
        for path in self.directory.iterdir():
            if path.name not in known and path.suffix in (".entry", ".tmp"):
                path.unlink(missing_ok=True)
        self._save_index()


def _entry_from_json(item: object, body: bytes) -> StoredResponse | None:
    try:
        assert isinstance(item, dict)
        return StoredResponse(
            uri=str(item["uri"]),
            vary_key=tuple((str(n), str(v)) for n, v in item["vary_key"]),
            status=int(item["status"]), reason=str(item["reason"]),
            headers=Headers((str(n), str(v)) for n, v in item["headers"]),
            body=body, request_time=float(item["request_time"]),
            response_time=float(item["response_time"]))
    except (AssertionError, KeyError, TypeError, ValueError):
        return None


def _read_entry(path: Path) -> StoredResponse | None:
    """An entry file: a JSON head line, then exactly body_len body bytes. The head is
    made to match the body again: files written before heads were cleaned may still
    carry ``Transfer-Encoding: chunked``."""
    try:
        with open(path, "rb") as f:
            head = f.readline(MAX_HEAD_BYTES)
            item = json.loads(head)
            body = f.read()
    except (OSError, ValueError):
        return None
    if not isinstance(item, dict) or len(body) != item.get("body_len"):
        return None
    entry = _entry_from_json(item, body)
    if entry is not None:
        entry.headers = stored_head(entry.headers, entry.status, len(body))
    return entry
