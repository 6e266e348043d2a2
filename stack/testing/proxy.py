"""Property-test an asyncio proxy (copying or splicing) on a faulty simulated network.

:func:`check_proxy` builds client 198.18.0.1 -- proxy 198.18.0.2 / 198.19.0.2 --
origin 198.19.0.1 (an echo server on port 80), runs the user's proxy handler on the
proxy host (port 1080), sends ``data`` from each client through it, half-closes, and
asserts that each client reads back exactly ``data``. All on virtual time, so loss,
reordering and two-minute timers cost only computation. A failure raises
AssertionError naming a pcap of the whole run (``<artifacts>/<name>.pcap``, see
:func:`stack.testing.capture.artifacts_dir`)::

    from hypothesis import given, strategies as st
    from stack.testing import check_proxy, copy_proxy, fault_models

    @given(faults=fault_models(), data=st.binary(max_size=100_000))
    def test_my_proxy(faults, data):
        check_proxy(copy_proxy, data, faults=faults)

A handler is ``async def handler(reader, writer, ctx)`` for one accepted client;
``ctx.open_upstream()`` connects to the origin. A layer above TCP joins the run
through a :class:`ProxyLayer` (``layer=``): the splice kit's
``splice.testing.check_proxy(..., splice=True)`` gives handlers ``ctx.splice`` so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.netdev.faults import FaultModel
from stack.sim import SimNetwork
from stack.simloop import SimDriver, run
from stack.streams import TcpApi, TcpServer
from stack.testing.capture import MemoryCapture, artifacts_dir

__all__ = ["ProxyContext", "ProxyLayer", "ProxyRun", "check_proxy", "copy_proxy", "pump"]

CLIENT, PROXY_C, PROXY_S, ORIGIN = "198.18.0.1", "198.18.0.2", "198.19.0.2", "198.19.0.1"
PROXY_PORT, ORIGIN_PORT = 1080, 80


@dataclass
class ProxyContext:
    """What a proxy handler may use besides its client's streams."""

    driver: SimDriver
    tcp: TcpApi
    upstream: tuple[str, int]

    async def open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A plain (copying) connection to the origin."""
        return await self.tcp.open_connection(*self.upstream)


ProxyHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, ProxyContext],
                        Awaitable[None]]


class ProxyLayer:
    """A layer above TCP on the proxy host for one :func:`check_proxy` run (the splice
    kit's is in splice/testing/proxy.py); this one adds nothing."""

    def context(self, ctx: ProxyContext) -> ProxyContext:
        """The context handlers get (the layer may return a richer one)."""
        return ctx

    def serving(self, ctx: ProxyContext, server: TcpServer) -> None:
        """The proxy listens; no client has connected yet."""

    def counters(self, ctx: ProxyContext) -> dict[str, int]:
        """The layer's counters at the end of the run (ProxyRun.layer_counters)."""
        return {}


@dataclass
class ProxyRun:
    """The outcome of a passing :func:`check_proxy`."""

    received: list[bytes]
    elapsed: float
    proxy_counters: dict[str, int] = field(default_factory=dict)
    layer_counters: dict[str, int] = field(default_factory=dict)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               chunk: int = 65536) -> int:
    """Copy ``reader`` to ``writer`` until end of stream, then half-close; bytes copied."""
    total = 0
    while data := await reader.read(chunk):
        writer.write(data)
        await writer.drain()
        total += len(data)
    if writer.can_write_eof():
        writer.write_eof()
    return total


async def copy_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     ctx: ProxyContext) -> None:
    """A proxy that copies both directions through its own buffers."""
    ur, uw = await ctx.open_upstream()
    await asyncio.gather(pump(reader, uw), pump(ur, writer))
    uw.close()
    writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await pump(reader, writer)
    writer.close()


def _network(seed: int, capture: MemoryCapture, faults: FaultModel,
             server_faults: FaultModel) -> tuple[SimNetwork, tuple]:
    net = SimNetwork(seed, pcap=capture)
    c, p, o = net.add_host("client"), net.add_host("proxy"), net.add_host("origin")
    net.connect(c, f"{CLIENT}/24", p, f"{PROXY_C}/24", a_to_b=faults, b_to_a=faults)
    net.connect(p, f"{PROXY_S}/24", o, f"{ORIGIN}/24", a_to_b=server_faults,
                b_to_a=server_faults)
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)
    return net, (c, p, o)


async def _client(driver: SimDriver, stack: Any, data: bytes) -> bytes:
    reader, writer = await driver.tcp(stack).open_connection(PROXY_C, PROXY_PORT)

    async def send() -> None:
        writer.write(data)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    got = await reader.read(-1)
    await sender
    writer.close()
    return got


async def _wait_all(tasks: Callable[[], list[asyncio.Future[Any]]], deadline: float,
                    driver: SimDriver) -> None:
    """Wait until every task of ``tasks()`` (a growing list) is done; raise the first
    error at once, TimeoutError at ``deadline`` (virtual time)."""
    while True:
        current = tasks()
        for t in current:
            if t.done():
                exc = t.exception()
                if exc is not None:
                    raise exc
        pending = [t for t in current if not t.done()]
        if not pending:
            return
        left = deadline - driver.now()
        if left <= 0:
            raise TimeoutError(f"{len(pending)} of {len(current)} client and handler "
                               "tasks still running")
        await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)


def check_proxy(handler: ProxyHandler, data: bytes, *, faults: FaultModel | None = None,
                server_faults: FaultModel | None = None, seed: int = 0,
                layer: ProxyLayer | None = None, clients: int = 1, timeout: float = 900.0,
                name: str = "proxy") -> ProxyRun:
    """Run ``clients`` echo exchanges of ``data`` through ``handler``; see the module
    docstring. ``faults`` impair the client link, ``server_faults`` (default: the
    same) the origin link; ``layer`` adds a layer above TCP on the proxy; ``timeout``
    bounds the run in virtual seconds. The run ends when every client has its echo and
    every handler has returned."""
    faults = faults or FaultModel()
    layer = layer or ProxyLayer()
    capture = MemoryCapture()
    net, (c, p, o) = _network(seed, capture, faults, server_faults or faults)

    async def main(driver: SimDriver) -> ProxyRun:
        start = driver.now()
        await driver.tcp(o).start_server(_echo, ORIGIN, ORIGIN_PORT)
        ctx = layer.context(ProxyContext(driver, driver.tcp(p), (ORIGIN, ORIGIN_PORT)))

        handlers: list[asyncio.Future[None]] = []

        def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.ensure_future(handler(r, w, ctx)))

        server = await ctx.tcp.start_server(on_client, PROXY_C, PROXY_PORT)
        layer.serving(ctx, server)
        clients_ = [asyncio.ensure_future(_client(driver, c, data)) for _ in range(clients)]
        # The handlers must end too (a splice after its TIMEWAIT): nothing is left
        # running; the first error of a client or a handler ends the run.
        await _wait_all(lambda: clients_ + handlers, driver.now() + timeout, driver)
        got = [t.result() for t in clients_]
        return ProxyRun(list(got), driver.now() - start, dict(ctx.tcp.tcp.counters),
                        dict(layer.counters(ctx)))

    try:
        result = run(main, net)
        for i, got in enumerate(result.received):
            assert got == data, (f"client {i} read {len(got)} bytes back, sent "
                                 f"{len(data)}; they differ")
        return result
    except Exception as e:  # any failure of the run leaves its capture
        path = capture.write(Path(artifacts_dir()) / f"{name}.pcap")
        raise AssertionError(f"proxy check failed ({type(e).__name__}: {e}); "
                             f"capture in {path}") from e
