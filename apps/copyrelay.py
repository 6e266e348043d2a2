"""Copy mode's relay, shared by the proxies: both directions through the streams API,
ended by the two ends or by the idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Relay read size: big reads keep the per-byte cost of copy mode down.
CHUNK = 256 * 1024


class IdleTimeout(TimeoutError):
    """Nothing moved either way for the idle timeout."""


async def copy_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                    b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter, *,
                    a_to_b: Callable[[int], None] | None = None,
                    b_to_a: Callable[[int], None] | None = None,
                    idle_timeout: float | None = None) -> None:
    """Relay a -> b and b -> a until both ends are done (each end of input becomes a
    half-close). ``a_to_b``/``b_to_a`` count the bytes of each direction. Raises the
    first error of either direction, or :class:`IdleTimeout` when no byte moved
    either way for ``idle_timeout`` seconds (the caller resets both connections, as
    the splice does with a pair that fell silent)."""
    loop = asyncio.get_running_loop()
    last = [loop.time()]

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   count: Callable[[int], None] | None) -> None:
        while data := await reader.read(CHUNK):
            last[0] = loop.time()
            writer.write(data)
            if count is not None:
                count(len(data))
            await writer.drain()
        if not writer.is_closing():
            writer.write_eof()

    tasks = {asyncio.ensure_future(pump(a_reader, b_writer, a_to_b)),
             asyncio.ensure_future(pump(b_reader, a_writer, b_to_a))}
    try:
        pending = set(tasks)
        while pending:
            wait = None if idle_timeout is None else max(0.0, last[0] + idle_timeout
                                                         - loop.time())
            done, pending = await asyncio.wait(pending, timeout=wait,
                                               return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
            if pending and idle_timeout is not None and \
                    loop.time() - last[0] >= idle_timeout:
                raise IdleTimeout(f"nothing relayed for {idle_timeout:g}s")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
