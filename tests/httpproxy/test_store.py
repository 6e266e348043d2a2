"""The shared disk store (apps/httpproxy/diskstore.py) behind CacheStore: several
stores on one directory stand for several workers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from apps.httpproxy import cli, diskstore
from apps.httpproxy.parser import Headers
from apps.httpproxy.store import CacheStore, StoredResponse, StoreError

T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves (a millisecond per reading, so that access times differ):
    access times and touch batches follow it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def entry(uri: str, size: int, tag: str = "1", key=()) -> StoredResponse:
    return StoredResponse(uri, key, 200, "OK", Headers([("X-Tag", tag)]),
                          tag.encode()[:1] * size, T0, T0)


def rows(directory: Path) -> list[tuple]:
    with sqlite3.connect(directory / diskstore.DB_NAME) as db:
        return db.execute("SELECT uri, file, length FROM entries ORDER BY uri").fetchall()


def files(directory: Path, suffix: str = ".entry") -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(suffix)}


def test_an_entry_stored_by_one_worker_is_a_hit_for_another(tmp_path: Path) -> None:
    w0, w1 = CacheStore(1 << 20, directory=tmp_path), CacheStore(1 << 20, directory=tmp_path)
    assert w0.put(entry("http://h/a", 1000, "a"))
    (got,) = w1.variants("http://h/a")
    assert got.body == b"a" * 1000 and got.headers.get("x-tag") == "a"
    assert len(w1) == len(w0) == 1 and w1.bytes == w0.bytes == got.size
    assert len(files(tmp_path)) == 1              # stored once, not once per worker


def test_a_worker_never_serves_a_memory_copy_another_replaced_or_dropped(tmp_path) -> None:
    w0, w1 = CacheStore(1 << 20, directory=tmp_path), CacheStore(1 << 20, directory=tmp_path)
    w0.put(entry("http://h/a", 10, "a"))
    assert w1.variants("http://h/a")[0].body == b"a" * 10        # now in w1's memory
    w0.put(entry("http://h/a", 10, "b"))
    assert [e.body for e in w1.variants("http://h/a")] == [b"b" * 10]
    assert w0.invalidate("http://h/a") == 1
    assert w1.variants("http://h/a") == [] and len(w1) == 0


def test_freshened_headers_rewrite_the_row_not_the_body(tmp_path: Path) -> None:
    w0, w1 = CacheStore(1 << 20, directory=tmp_path), CacheStore(1 << 20, directory=tmp_path)
    w0.put(entry("http://h/a", 5000, "a"))
    before = files(tmp_path)
    (old,) = w1.variants("http://h/a")
    fresh = w1.replace_headers(old, Headers([("X-Tag", "fresh")]), T0 + 5, T0 + 6)
    assert files(tmp_path) == before
    (got,) = w0.variants("http://h/a")
    assert got.headers.get("x-tag") == "fresh" and got.response_time == T0 + 6
    assert got.body == fresh.body == b"a" * 5000 and len(w0) == 1


def test_the_byte_bound_and_lru_order_hold_across_workers(tmp_path: Path) -> None:
    clock = Clock()
    bound = 3 * entry("http://h/x", 700).size + 100
    w0 = CacheStore(bound, directory=tmp_path, clock=clock)
    w1 = CacheStore(bound, directory=tmp_path, clock=clock)
    for name in "abc":
        assert w0.put(entry(f"http://h/{name}", 700))
    w1.touch(w1.variants("http://h/a")[0])   # a: the most recent, in w1's batch
    w1.close()                                # the batch is written
    assert w0.put(entry("http://h/d", 700))  # evicts b, the least recently used
    assert [u for u, _f, _n in rows(tmp_path)] == ["http://h/a", "http://h/c", "http://h/d"]
    assert w0.bytes <= bound and w0.counters["evicted"] == 1
    assert len(files(tmp_path)) == 3         # b's file went with its row


def test_touches_are_written_in_batches(tmp_path: Path) -> None:
    clock = Clock()
    w0 = CacheStore(1 << 20, directory=tmp_path, clock=clock)
    w0.put(entry("http://h/a", 10))

    def atime() -> float:
        with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:
            return db.execute("SELECT atime FROM entries").fetchone()[0]

    stored = atime()
    hit = w0.variants("http://h/a")[0]
    w0.touch(hit)                            # within TOUCH_INTERVAL: pending
    assert atime() == stored
    clock.now += diskstore.TOUCH_INTERVAL
    w0.touch(hit)
    assert atime() > stored


def test_start_up_drops_orphans_temp_files_and_rows_without_a_whole_file(tmp_path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path)
    for name in "abc":
        store.put(entry(f"http://h/{name}", 100))
    store.close()
    by_uri = {u: f for u, f, _n in rows(tmp_path)}
    (tmp_path / by_uri["http://h/a"]).unlink()                          # missing file
    (tmp_path / by_uri["http://h/b"]).write_bytes(b"b" * 99)            # wrong size
    (tmp_path / ("0" * 32 + ".entry")).write_bytes(b"orphan")           # no row
    (tmp_path / ("1" * 32 + ".tmp")).write_bytes(b"half-writ")          # half written
    again = CacheStore(1 << 20, directory=tmp_path)
    assert [u for u, _f, _n in rows(tmp_path)] == ["http://h/c"]
    assert files(tmp_path) == {by_uri["http://h/c"]} and not files(tmp_path, ".tmp")
    assert (again.counters["recovered_rows"], again.counters["recovered_orphans"],
            again.counters["recovered_temp"]) == (2, 2, 1)
    assert len(again) == 1 and again.bytes == again.variants("http://h/c")[0].size


def test_a_lowered_bound_is_enforced_at_start(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path)
    for i in range(10):
        store.put(entry(f"http://h/{i}", 1000))
    store.close()
    small = CacheStore(3000, max_object=1500, directory=tmp_path)
    assert small.bytes <= 3000 and len(small) == 2 and len(files(tmp_path)) == 2


def test_an_old_per_worker_directory_starts_empty(tmp_path: Path) -> None:
    for d in (tmp_path, tmp_path / "worker0", tmp_path / "worker1"):
        d.mkdir(exist_ok=True)
        (d / "index.json").write_text('[{"uri": "http://h/a"}]')
        (d / ("ab" * 32 + ".entry")).write_bytes(b'{"uri": "http://h/a"}\nbody')
    (tmp_path / "notes.txt").write_text("mine")
    store = CacheStore(1 << 20, directory=tmp_path)
    assert len(store) == 0 and store.variants("http://h/a") == []
    assert sorted(p.name for p in tmp_path.iterdir() if "sqlite3" not in p.name) == \
        ["notes.txt"]


@pytest.mark.parametrize("damage", ["flip", "same-length", "head"])
def test_a_damaged_entry_is_dropped_and_counted(tmp_path: Path, damage: str) -> None:
    store = CacheStore(1 << 20, directory=tmp_path)
    store.put(entry("http://h/a", 1000, "a"))
    ((_uri, name, _n),) = rows(tmp_path)
    path = tmp_path / name
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[500] ^= 1
        path.write_bytes(data)
    elif damage == "same-length":
        path.write_bytes(b"z" * 1000)
    else:
        with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:
            db.execute("UPDATE entries SET head = '{\"uri\": 5'")
    other = CacheStore(1 << 20, directory=tmp_path)
    assert other.variants("http://h/a") == []
    assert other.counters["disk_errors"] == 1 and len(other) == 0 and not path.exists()
    assert other.put(entry("http://h/a", 1000, "b"))
    assert other.variants("http://h/a")[0].body == b"b" * 1000


def test_a_damaged_index_is_a_clear_start_up_error(tmp_path: Path, capsys) -> None:
    (tmp_path / diskstore.DB_NAME).write_bytes(b"not a database, " * 512)
    with pytest.raises(StoreError, match="is damaged .* remove it"):
        CacheStore(1 << 20, directory=tmp_path)
    assert cli.main(["--cache-dir", str(tmp_path)]) == 2
    assert "cache.sqlite3 is damaged" in capsys.readouterr().err


def test_an_index_of_another_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema 99"):
        CacheStore(1 << 20, directory=tmp_path)


def test_a_locked_index_fails_the_put_counted_and_leaves_no_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(diskstore, "BUSY_TIMEOUT", 0.05)
    store = CacheStore(1 << 20, directory=tmp_path)
    other = sqlite3.connect(tmp_path / diskstore.DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")          # another worker holding the write lock
    try:
        assert not store.put(entry("http://h/a", 100))
        assert store.counters["index_errors"] == 1
        assert not files(tmp_path) and not files(tmp_path, ".tmp")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.put(entry("http://h/a", 100)) and len(store) == 1


def test_too_large_drops_the_stored_version(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, max_object=2000, directory=tmp_path)
    store.put(entry("http://h/a", 100))
    assert not store.put(entry("http://h/a", 5000))
    assert store.variants("http://h/a") == [] and store.counters["too_large"] == 1
    assert not files(tmp_path)


def test_variants_are_bounded_on_disk(tmp_path: Path) -> None:
    clock = Clock()
    store = CacheStore(1 << 20, directory=tmp_path, clock=clock)
    for i in range(12):
        store.put(entry("http://h/v", 10, str(i % 10), (("accept", str(i)),)))
    got = store.variants("http://h/v")
    assert [e.vary_key for e in got] == [(("accept", str(i)),) for i in range(11, 3, -1)]
    assert len(files(tmp_path)) == 8


def test_a_row_of_the_wrong_types_is_dropped_not_a_traceback(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path)
    store.put(entry("http://h/a", 100))
    with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:
        db.execute("UPDATE entries SET length = 'many', file = x'00'")
    assert store.variants("http://h/a") == [] and store.counters["disk_errors"] == 1
    assert len(store) == 0


def test_a_row_naming_another_file_never_removes_it(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path)
    store.put(entry("http://h/a", 100))
    keep = tmp_path / "keep.txt"
    keep.write_text("not the cache's")
    with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:
        db.execute("UPDATE entries SET file = ?", (f"../{tmp_path.name}/keep.txt",))
    assert store.variants("http://h/a") == [] and store.counters["disk_errors"] == 1
    store.put(entry("http://h/b", 100))
    with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:
        db.execute("UPDATE entries SET file = ?", (diskstore.DB_NAME,))
    CacheStore(1 << 20, directory=tmp_path)       # recovery drops the row
    assert keep.exists() and (tmp_path / diskstore.DB_NAME).exists()


def test_an_empty_store_is_still_a_store(tmp_path: Path) -> None:
    for store in (CacheStore(1 << 20), CacheStore(1 << 20, directory=tmp_path)):
        assert len(store) == 0 and store


def test_an_index_broken_while_running_is_counted_never_raised(tmp_path: Path) -> None:
    store = CacheStore(1 << 20, directory=tmp_path)
    store.put(entry("http://h/a", 100))
    hit = store.variants("http://h/a")[0]
    with sqlite3.connect(tmp_path / diskstore.DB_NAME) as db:   # under its feet
        db.execute("DROP TABLE entries")
    assert store.variants("http://h/a") == []
    assert not store.put(entry("http://h/c", 100))
    assert store.invalidate("http://h/a") == 0
    store.touch(hit)
    store.close()                          # writes the pending touch: fails, counted
    assert store.counters["index_errors"] == 4
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.glob("*.entry"))) == 1
    with pytest.raises(StoreError, match="no such table"):
        CacheStore(1 << 20, directory=tmp_path)


def test_the_entry_bound_holds_across_workers_and_at_start(tmp_path: Path) -> None:
    w0 = CacheStore(1 << 20, directory=tmp_path, max_entries=3)
    w1 = CacheStore(1 << 20, directory=tmp_path, max_entries=3)
    for i in range(5):
        (w0 if i % 2 else w1).put(entry(f"http://h/{i}", 10))
    assert len(w0) == 3 and w0.counters["evicted"] + w1.counters["evicted"] == 2
    assert len(CacheStore(1 << 20, directory=tmp_path, max_entries=3)) == 3
    assert len(CacheStore(1 << 20, directory=tmp_path, max_entries=2)) == 2
