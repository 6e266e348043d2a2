"""``kill -9`` during cache fills from several processes, many times: after a restart
every stored object reads back exactly as one of the processes wrote it, or is absent,
and the byte bound holds."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from apps.httpproxy.store import CacheStore

ROUNDS = 20
WRITERS = 3
MAX_BYTES = 200_000
REPO = Path(__file__).resolve().parents[2]
#: Keys every writer uses (overlapping) and keys of one writer only (distinct).
SHARED = [f"http://h/shared{i}" for i in range(8)]


def own_keys(writer: int) -> list[str]:
    return [f"http://h/w{writer}-{i}" for i in range(6)]


ALL_KEYS = SHARED + [k for w in range(WRITERS) for k in own_keys(w)]


WRITER = textwrap.dedent("""
    import hashlib, random, sys
    from apps.httpproxy.parser import Headers
    from apps.httpproxy.store import CacheStore, StoredResponse
    directory, writer, seed, max_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4])
    keys = sys.argv[5:]
    from tests.httpproxy.test_store_crash import body_for
    # Even writers hand their writes to a thread (as the proxy's workers do), odd ones
    # write from the main thread.
    store = CacheStore(max_bytes, 64_000, directory, memory_bytes=0, recover=False,
                       background=writer % 2 == 0)
    rng = random.Random(seed)
    print("ready", flush=True)
    for n in range(20_000):             # bounded: the test kills it long before
        uri = rng.choice(keys)
        vary = (("accept", str(rng.randrange(2))),) if uri.endswith(("1", "3")) else ()
        tag = f"{writer}-{seed}-{n}"
        action = rng.random()
        if action < 0.75:
            store.put(StoredResponse(uri, vary, 200, "OK", Headers([("X-Tag", tag)]),
                                     body_for(uri, tag), 1.0, 2.0))
        elif action < 0.95:
            for e in store.variants(uri):
                store.touch(e)
        else:
            store.invalidate(uri)
    """)


def start_writers(directory: Path, seed: int) -> list[subprocess.Popen]:
    procs = []
    for w in range(WRITERS):
        keys = SHARED + own_keys(w)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(w), str(seed * 10 + w),
             str(MAX_BYTES), *keys], cwd=REPO, stdout=subprocess.PIPE))
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    return procs


def check_store(directory: Path) -> int:
    """Reopen (recovery runs) and check every entry; how many there are."""
    store = CacheStore(MAX_BYTES, 64_000, directory, memory_bytes=0)
    # A committed row always names a whole file: recovery finds none to drop.
    assert store.counters["recovered_rows"] == 0, store.counters
    found = []
    for uri in ALL_KEYS:
        for e in store.variants(uri):
            tag = e.headers.get("x-tag")
            assert tag is not None and e.body == body_for(uri, tag), (uri, tag)
            assert e.headers.fields == [("X-Tag", tag), ("Content-Length", str(len(e.body)))]
            assert (e.status, e.reason, e.request_time, e.response_time) == (200, "OK", 1.0, 2.0)
            assert e.vary_key in ((), (("accept", "0"),), (("accept", "1"),))
            found.append(e)
    assert store.counters["disk_errors"] == 0, store.counters
    assert store.bytes == sum(e.size for e in found) <= MAX_BYTES
    assert len(store) == len(found)
    names = {p.name for p in directory.iterdir()}
    assert not [n for n in names if n.endswith(".tmp")]
    assert len([n for n in names if n.endswith(".entry")]) == len(found)
    store.close()
    return len(found)


def body_for(uri: str, tag: str) -> bytes:
    """The body of ``uri`` as written with ``tag``: its length and bytes follow from both."""
    seed = hashlib.sha256(f"{uri} {tag}".encode()).digest()
    return hashlib.shake_256(seed).digest(1 + int.from_bytes(seed[:4], "big") % 30_000)


def test_kill_9_during_fills_leaves_every_object_intact_or_absent(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("STORE_CRASH_SEED", "9111"))
    seen = []
    for round_ in range(ROUNDS):
        procs = start_writers(tmp_path, round_)
        try:
            # Each writer dies at its own random moment within its fills.
            for p in sorted(procs, key=lambda _p: rng.random()):
                time.sleep(rng.uniform(0.0, 0.15))  # the moment of the kill, not a wait
                p.send_signal(signal.SIGKILL)
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=10)
                assert p.stdout is not None
                p.stdout.close()
        assert all(p.returncode == -signal.SIGKILL for p in procs)
        seen.append(check_store(tmp_path))
    assert max(seen) > 0   # the writers did store objects before dying
