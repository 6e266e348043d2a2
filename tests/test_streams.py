"""The asyncio streams API over the stack's TCP (stack/streams.py)."""

from __future__ import annotations

import asyncio

import pytest

from stack.sim import SimNetwork
from stack.simloop import run

A, B = "198.18.0.1", "198.18.0.2"


def _net(seed: int = 1) -> tuple[SimNetwork, object, object]:
    net = SimNetwork(seed)
    a, b = net.add_host("a"), net.add_host("b")
    net.connect(a, f"{A}/24", b, f"{B}/24")
    return net, a, b


def test_a_cancelled_handler_task_is_no_error():
    net, a, b = _net()

    async def main(driver) -> list:
        errors: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        started = asyncio.Event()

        async def handler(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
            started.set()
            await asyncio.sleep(3600)

        await driver.tcp(b).start_server(handler, B, 7)
        reader, writer = await driver.tcp(a).open_connection(B, 7)
        await started.wait()
        (task,) = [t for t in asyncio.all_tasks() if not t.done() and getattr(
            t.get_coro(), "__qualname__", "").endswith("handler")]
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        await asyncio.sleep(0.1)
        writer.close()
        return errors

    assert run(main, net) == []


def test_a_failing_handler_task_is_reported_and_its_connection_closed():
    net, a, b = _net()

    async def main(driver) -> list:
        errors: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))

        async def handler(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
            raise KeyError("bug")

        await driver.tcp(b).start_server(handler, B, 7)
        reader, writer = await driver.tcp(a).open_connection(B, 7)
        assert await reader.read() == b""
        writer.close()
        return errors

    (ctx,) = run(main, net)
    assert isinstance(ctx["exception"], KeyError)


def _big_then_silence(driver, b, done: asyncio.Event):
    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(range(200)) * 1500)   # 300,000 bytes, then silence
        await done.wait()
        writer.close()

    return driver.tcp(b).start_server(serve, B, 80)


def test_asyncios_own_reader_on_a_stack_transport_still_reads_beyond_its_limit():
    """A protocol with asyncio's StreamReader (not the stack's) resumes from inside its
    wait: the transport hands over on the next turn, so the read completes although
    nothing more arrives."""
    net, a, b = _net(6)

    async def main(driver) -> tuple[bytes, bytes]:
        done = asyncio.Event()
        await _big_then_silence(driver, b, done)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        transport, _ = await driver.tcp(a).create_connection(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), B, 80)
        await asyncio.sleep(1.0)                 # all of it arrives first
        got = await asyncio.wait_for(reader.readexactly(300_000), 5.0)
        assert not transport.can_hand_over()
        with pytest.raises(ValueError):         # its buffer cannot be handed over
            transport.take_buffered()
        done.set()
        transport.close()
        return got, bytes(range(200)) * 1500

    got, want = run(main, net)
    assert got == want


def test_the_stacks_reader_hands_its_buffer_over_through_the_transport():
    net, a, b = _net(7)

    async def main(driver) -> tuple[bytes, bytes]:
        done = asyncio.Event()
        await _big_then_silence(driver, b, done)
        reader, writer = await driver.tcp(a).open_connection(B, 80)
        await asyncio.sleep(1.0)
        head = await reader.readexactly(1000)
        assert writer.transport.can_hand_over()
        rest = writer.transport.take_buffered(500)
        assert len(rest) == 500 and reader.buffered_size() > 0
        nxt = await reader.readexactly(10)
        done.set()
        writer.close()
        return head + rest + nxt, (bytes(range(200)) * 1500)[:1510]

    got, want = run(main, net)
    assert got == want
