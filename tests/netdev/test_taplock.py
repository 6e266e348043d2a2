"""stack/netdev/taplock.py: one stack per TAP, a flock that dies with its holder and
is shared by the processes one supervisor forks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from stack.netdev.taplock import TapBusyError, lock_tap

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from stack.netdev.taplock import lock_tap
    lock_tap("tsc0", "tsc", directory=Path(sys.argv[1]), inode=7)
    print("locked", flush=True)
    sys.stdin.read()   # hold until the test closes our stdin
""")


@pytest.fixture
def holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_second_process_is_refused_while_the_first_holds_the_tap(tmp_path, holder):
    with pytest.raises(TapBusyError) as e:
        lock_tap("tsc0", "tsc", directory=tmp_path, inode=7)
    msg = str(e.value)
    assert "tsc0 in netns tsc already has a stack attached" in msg
    assert f"(pid {holder.pid})" in msg and "\n" not in msg
    assert e.value.errno == 16  # EBUSY
    # Another TAP, or the same name in another namespace, is free.
    lock_tap("tsc1", "tsc", directory=tmp_path, inode=7).hold().release()
    lock_tap("tsc0", "other", directory=tmp_path, inode=8).hold().release()


def test_the_lock_dies_with_its_process(tmp_path, holder):
    holder.kill()  # no chance to clean up
    holder.wait(timeout=10)
    lock = lock_tap("tsc0", "tsc", directory=tmp_path, inode=7).hold()
    lock.release()


def test_a_lone_holder_removes_its_file_and_shares_within_its_process(tmp_path):
    a = lock_tap("tsc0", "tsc", directory=tmp_path, inode=7).hold()
    b = lock_tap("tsc0", "tsc", directory=tmp_path, inode=7).hold()
    assert a is b and a.refs == 2
    a.release()
    assert a.fd >= 0 and list(tmp_path.iterdir())
    b.release()
    assert a.fd < 0 and not list(tmp_path.iterdir())


def test_forked_children_share_the_lock_and_keep_it_after_the_parent_lets_go(tmp_path):
    lock = lock_tap("tsc0", "tsc", directory=tmp_path, inode=7).hold()
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker: its supervisor's lock is its own
        code = 1
        try:
            os.close(ready_r)
            os.close(hold_w)
            mine = lock_tap("tsc0", "tsc", directory=tmp_path, inode=7)
            code = 0 if mine is lock and mine.shared else 2
            os.write(ready_w, b"x")
            os.read(hold_r, 1)  # hold until the test closes the pipe
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        lock.release()  # the supervisor closes its copies after forking
        assert list(tmp_path.iterdir())  # shared: the file stays
        with pytest.raises(TapBusyError):
            lock_tap("tsc0", "tsc", directory=tmp_path, inode=7)  # the child holds it
    finally:
        os.close(hold_w)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.waitstatus_to_exitcode(status) == 0
    lock_tap("tsc0", "tsc", directory=tmp_path, inode=7).hold().release()


def test_stale_lock_files_are_swept_and_held_ones_kept(tmp_path, holder):
    (tmp_path / "tap-net9-gone0.lock").write_text("123 - gone0\n")  # its holder died
    lock_tap("tsc1", "tsc", directory=tmp_path, inode=7).hold().release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tap-net7-tsc0.lock"]
    with pytest.raises(TapBusyError):
        lock_tap("tsc0", "tsc", directory=tmp_path, inode=7)
