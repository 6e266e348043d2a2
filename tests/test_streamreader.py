"""StackStreamReader (stack/streamreader.py): reads as asyncio's StreamReader does, with
a buffer of its own that it can hand over."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.streamreader import StackStreamReader


class FakeTransport(asyncio.Transport):
    """Records pause/resume; on resume hands ``on_resume`` over synchronously."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.on_resume: bytes = b""
        self.reader: StackStreamReader | None = None
        self.bound: StackStreamReader | None = None

    def bind_reader(self, reader: StackStreamReader) -> None:
        self.bound = reader

    def is_closing(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")
        if self.on_resume and self.reader is not None:
            data, self.on_resume = self.on_resume, b""
            self.reader.feed_data(data)


ops = st.one_of(
    st.tuples(st.just("feed"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("read"), st.integers(-1, 50)),
    st.tuples(st.just("readexactly"), st.integers(0, 50)),
    st.tuples(st.just("readuntil"), st.sampled_from([b"\n", b"ab", b"xyz"])),
    st.tuples(st.just("readline"), st.none()),
)


async def _apply(reader: asyncio.StreamReader, script: list, eof: bool) -> list:
    """Run ``script`` on ``reader``: a read that would wait is skipped (so both readers
    see the same calls); every outcome is recorded."""
    out: list = []
    for op, arg in script:
        if op == "feed":
            reader.feed_data(arg)
            continue
        call = getattr(reader, op)
        coro = call(arg) if arg is not None else call()
        task = asyncio.ensure_future(coro)
        await asyncio.sleep(0)
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            out.append((op, "waits"))
            continue
        try:
            out.append((op, task.result()))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            out.append((op, type(e).__name__, getattr(e, "partial", None),
                        getattr(e, "consumed", None)))
    if eof:
        reader.feed_eof()
        out.append(("rest", await reader.read(), reader.at_eof()))
    return out


@settings(max_examples=300, deadline=None)
@given(script=st.lists(ops, max_size=25), eof=st.booleans(), limit=st.integers(4, 64))
def test_reads_like_asyncios_reader(script, eof, limit):
    async def main() -> tuple[list, list]:
        theirs = await _apply(asyncio.StreamReader(limit=limit), script, eof)
        ours = await _apply(StackStreamReader(limit=limit), script, eof)
        return theirs, ours

    theirs, ours = asyncio.run(main())
    assert ours == theirs


def test_take_buffered_hands_over_what_was_not_read():
    async def main() -> None:
        r = StackStreamReader()
        r.feed_data(b"hello world")
        assert await r.read(6) == b"hello "
        assert r.buffered_size() == 5
        assert r.take_buffered(2) == b"wo"
        assert r.take_buffered() == b"rld"
        assert r.take_buffered() == b"" and r.buffered_size() == 0
        r.feed_data(b"next")
        r.put_back(b"rld")
        assert await r.read(10) == b"rldnext"

    asyncio.run(main())


def test_pauses_above_twice_the_limit_and_resumes_at_the_limit():
    async def main() -> None:
        t = FakeTransport()
        r = StackStreamReader(limit=10)
        r.set_transport(t)
        assert t.bound is r                       # a TcpTransport learns its reader
        r.feed_data(b"x" * 21)
        assert t.calls == ["pause"]
        r.feed_data(b"y")
        assert t.calls == ["pause"]               # once
        await r.read(11)
        assert t.calls == ["pause"]               # 11 left: above the limit
        await r.read(1)
        assert t.calls == ["pause", "resume"]     # 10 left: at the limit

    asyncio.run(main())


def test_bytes_handed_over_on_resume_wake_the_read_that_resumed():
    """readexactly beyond twice the limit resumes the transport from inside its wait;
    what the transport hands over right then must complete it, with nothing more
    arriving (asyncio's reader would wait for ever)."""
    async def main() -> bytes:
        t = FakeTransport()
        r = StackStreamReader(limit=4)
        t.reader = r
        r.set_transport(t)
        r.feed_data(b"a" * 9)                     # paused
        t.on_resume = b"b" * 3
        return await asyncio.wait_for(r.readexactly(12), 1.0)

    assert asyncio.run(main()) == b"a" * 9 + b"b" * 3


def test_an_error_fails_the_waiting_read_and_the_next():
    async def main() -> None:
        r = StackStreamReader()
        task = asyncio.ensure_future(r.read(5))
        await asyncio.sleep(0)
        r.set_exception(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await task
        with pytest.raises(ConnectionResetError):
            await r.readexactly(1)
        assert isinstance(r.exception(), ConnectionResetError)

    asyncio.run(main())


def test_two_concurrent_reads_are_refused_and_lines_iterate():
    async def main() -> list[bytes]:
        r = StackStreamReader()
        first = asyncio.ensure_future(r.read(1))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await r.read(1)
        r.feed_data(b"a\nb\nc")
        assert await first == b"a"
        r.feed_eof()
        return [line async for line in r]

    assert asyncio.run(main()) == [b"\n", b"b\n", b"c"]


def test_is_an_asyncio_stream_reader():
    async def main() -> None:
        r = StackStreamReader()
        assert isinstance(r, asyncio.StreamReader)
        proto = asyncio.StreamReaderProtocol(r)
        t = FakeTransport()
        proto.connection_made(t)
        writer = asyncio.StreamWriter(t, proto, r, asyncio.get_running_loop())
        proto.data_received(b"abc")
        proto.eof_received()
        assert await r.read() == b"abc" and r.at_eof()
        assert writer.transport is t

    asyncio.run(main())
