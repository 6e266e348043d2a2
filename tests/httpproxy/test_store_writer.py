"""The disk store's writes from a thread (apps/httpproxy/storewriter.py): in order,
bounded, and an invalidation takes effect at once for lookups."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from apps.httpproxy import diskstore, storewriter
from apps.httpproxy.parser import Headers
from apps.httpproxy.store import CacheStore, StoredResponse, StoreError

T0 = 1_700_000_000.0


def entry(uri: str, size: int, tag: str = "a") -> StoredResponse:
    return StoredResponse(uri, (), 200, "OK", Headers([("X-Tag", tag)]),
                          tag.encode()[:1] * size, T0, T0)


class HeldLock:
    """Another worker holding the index's write lock: the writer thread waits."""

    def __init__(self, directory: Path) -> None:
        self.db = sqlite3.connect(directory / diskstore.DB_NAME, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def test_writes_run_in_order_and_close_finishes_them(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path, background=True)
    for tag in "abc":
        assert store.put(entry("http://h/x", 1000, tag))
    store.invalidate("http://h/y")
    store.put(entry("http://h/y", 10, "y"))
    store.close()
    other = CacheStore(1 << 20, directory=tmp_path)
    assert [e.body for e in other.variants("http://h/x")] == [b"c" * 1000]
    assert [e.body for e in other.variants("http://h/y")] == [b"y" * 10]
    assert len(other) == 2 and other.counters["recovered_orphans"] == 0


def test_an_invalidation_hides_the_uri_before_the_thread_runs_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(diskstore, "BUSY_TIMEOUT", 10.0)
    store = CacheStore(1 << 20, directory=tmp_path)
    store.put(entry("http://h/x", 100))
    store.close()
    store = CacheStore(1 << 20, directory=tmp_path, background=True)
    assert store.variants("http://h/x")
    held = HeldLock(tmp_path)
    try:
        store.invalidate("http://h/x")             # queued: the thread waits for the lock
        assert store.variants("http://h/x") == []  # but no lookup finds the entry
        assert CacheStore(1 << 20, directory=tmp_path, recover=False).variants("http://h/x")
    finally:
        held.release()
    store.close()
    assert CacheStore(1 << 20, directory=tmp_path).variants("http://h/x") == []


def test_a_full_queue_refuses_the_store_and_counts_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(diskstore, "BUSY_TIMEOUT", 10.0)
    monkeypatch.setattr(storewriter, "MAX_JOBS", 3)
    monkeypatch.setattr(storewriter, "MAX_PENDING_BYTES", 5000)
    store = CacheStore(1 << 20, directory=tmp_path, background=True)
    held = HeldLock(tmp_path)
    try:
        assert store.put(entry("http://h/0", 2000))
        assert store.put(entry("http://h/1", 2000))
        assert not store.put(entry("http://h/2", 2000))     # over the bytes bound
        assert store.put(entry("http://h/3", 10))
        assert not store.put(entry("http://h/4", 10))       # over the jobs bound
        assert store.counters["write_queue_full"] == 2
    finally:
        held.release()
    store.close()
    other = CacheStore(1 << 20, directory=tmp_path)
    assert [u for u in ("http://h/0", "http://h/1", "http://h/2", "http://h/3",
                        "http://h/4") if other.variants(u)] == \
        ["http://h/0", "http://h/1", "http://h/3"]


def test_a_freshened_head_is_written_by_the_thread(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path, background=True)
    store.put(entry("http://h/x", 100))
    store.close()
    store = CacheStore(1 << 20, directory=tmp_path, background=True)
    (old,) = store.variants("http://h/x")
    store.replace_headers(old, Headers([("X-Tag", "fresh")]), T0 + 1, T0 + 2)
    store.close()
    (got,) = CacheStore(1 << 20, directory=tmp_path).variants("http://h/x")
    assert got.headers.get("x-tag") == "fresh" and got.body == b"a" * 100


def test_a_writer_that_cannot_open_the_index_is_a_start_up_error(tmp_path, monkeypatch):
    CacheStore(1 << 20, directory=tmp_path).close()

    def broken(*args, **kwargs):
        raise StoreError("no index here")

    monkeypatch.setattr(storewriter, "DiskStore", broken)
    with pytest.raises(StoreError, match="no index here"):
        CacheStore(1 << 20, directory=tmp_path, background=True)


def test_a_too_large_replacement_drops_only_its_variant(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, max_object=4000, directory=tmp_path, background=True)
    for accept in ("a", "b"):
        e = entry("http://h/v", 100, accept)
        e.vary_key = (("accept", accept),)
        store.put(e)
    big = entry("http://h/v", 5000, "a")
    big.vary_key = (("accept", "a"),)
    assert not store.put(big)
    store.close()
    got = CacheStore(1 << 20, directory=tmp_path).variants("http://h/v")
    assert [e.vary_key for e in got] == [(("accept", "b"),)]
