"""The asyncio streams API over the stack's TCP (stack/streams.py)."""

from __future__ import annotations

import asyncio

from stack.sim import SimNetwork
from stack.simloop import run

A, B = "198.18.0.1", "198.18.0.2"


def _net(seed: int = 1) -> tuple[SimNetwork, object, object]:
    net = SimNetwork(seed)
    a, b = net.add_host("a"), net.add_host("b")
    net.connect(a, f"{A}/24", b, f"{B}/24")
    return net, a, b


def test_a_cancelled_handler_task_closes_its_connection_and_logs_nothing():
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
        assert await reader.read() == b""       # the server side closed with a FIN
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
