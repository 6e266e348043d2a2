"""Property-test a splicing asyncio proxy: stack/testing/proxy.py's check_proxy with
the splice layer on the proxy host.

::

    from splice.testing import check_proxy, splice_proxy

    @given(faults=fault_models(max_corrupt=0), data=st.binary(max_size=100_000))
    def test_my_proxy(faults, data):
        check_proxy(splice_proxy, data, faults=faults, splice=True)

With ``splice=True`` a handler's ``ctx`` is a :class:`SpliceProxyContext`:
``ctx.splice`` is the host's splice API (splice/aio.py), the listener accepts
spliceable connections (init_splice), and the result's ``splice_counters`` are the
splicer's counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from splice.aio import SpliceApi
from splice.pair import SpliceError
from splice.testing.sim import splice_api
from stack.streams import TcpServer
from stack.testing import proxy as base
from stack.testing.proxy import ProxyContext, ProxyHandler, ProxyLayer, ProxyRun, copy_proxy

if TYPE_CHECKING:
    from stack.core import Stack

__all__ = ["SpliceLayer", "SpliceProxyContext", "SpliceProxyRun", "check_proxy",
           "splice_proxy"]


@dataclass
class SpliceProxyContext(ProxyContext):
    """A handler's context with the proxy host's splice API."""

    splice: SpliceApi | None = None


@dataclass
class SpliceProxyRun(ProxyRun):
    """A passing run; ``splice_counters`` are the proxy's splicer counters."""

    @property
    def splice_counters(self) -> dict[str, int]:
        """The splicer's counters at the end of the run."""
        return self.layer_counters


class SpliceLayer(ProxyLayer):
    """The splice layer on the proxy host of a check_proxy run."""

    def context(self, ctx: ProxyContext) -> SpliceProxyContext:
        """The context with ``splice``, the proxy host's splice API."""
        fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
        host = cast("Stack", ctx.tcp.tcp.ip)  # the proxy's Stack (its TCP's IP layer)
        return SpliceProxyContext(**fields, splice=splice_api(ctx.driver, host))

    def serving(self, ctx: ProxyContext, server: TcpServer) -> None:
        """Connections the proxy accepts can be spliced (docs/splice.md §1.1)."""
        assert isinstance(ctx, SpliceProxyContext) and ctx.splice is not None
        ctx.splice.init_splice(server)

    def counters(self, ctx: ProxyContext) -> dict[str, int]:
        """The splicer's counters."""
        assert isinstance(ctx, SpliceProxyContext) and ctx.splice is not None
        return dict(ctx.splice.splicer.counters)


async def splice_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       ctx: SpliceProxyContext) -> None:
    """A proxy that splices the two connections (docs/splice.md) and waits for the end.

    A client connection that is no longer ESTABLISHED when the proxy gets to it (the
    client already half-closed) cannot be spliced (docs/splice.md §1): it is copied."""
    assert ctx.splice is not None
    try:
        _sr, sw = await ctx.splice.open_connection(writer, *ctx.upstream)
    except SpliceError:
        await copy_proxy(reader, writer, ctx)
        return
    pair = await ctx.splice.splice(writer, sw)
    await ctx.splice.wait_closed(pair)


def check_proxy(handler: ProxyHandler, data: bytes, *, splice: bool = False,
                **kw: Any) -> SpliceProxyRun:
    """stack.testing.check_proxy (same arguments), with the splice layer on the proxy
    when ``splice`` is true."""
    run = base.check_proxy(handler, data, layer=SpliceLayer() if splice else None, **kw)
    return SpliceProxyRun(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})
