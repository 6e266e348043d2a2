"""The classic test services on the stack: echo (RFC 862), discard (RFC 863) and
chargen (RFC 864).

Echo and chargen are asyncio stream handlers. Discard is a bare protocol
(:class:`DiscardProtocol`): it needs no task, reader or writer per connection, so
thousands of idle connections on it cost little more than their TCP state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tapsplice.services")

ECHO_PORT, DISCARD_PORT, CHARGEN_PORT = 7, 9, 19
CHUNK = 256 * 1024


def _chargen_block() -> bytes:
    """Whole cycles of RFC 864's rotating 72-character lines, about 1 MB."""
    chars = bytes(range(32, 127))  # the 95 printable ASCII characters
    lines = []
    for i in range(len(chars)):
        rot = chars[i:] + chars[:i]
        lines.append(rot[:72] + b"\r\n")
    cycle = b"".join(lines)
    return cycle * max(1, (1 << 20) // len(cycle))


CHARGEN_BLOCK = _chargen_block()


async def _finish(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything received; half-close when the client does."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError) as e:
        log.debug("echo: %s", e)
    await _finish(writer)


async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read and throw away everything until the client closes (stream form)."""
    try:
        while await reader.read(CHUNK):
            pass
    except (ConnectionError, OSError) as e:
        log.debug("discard: %s", e)
    await _finish(writer)


class DiscardProtocol(asyncio.Protocol):
    """Discard (RFC 863) as a protocol: data is dropped as it arrives; the client's
    FIN is answered with ours (the transport closes when eof_received says so)."""

    __slots__ = ("transport", "received")

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        #: Bytes thrown away on this connection.
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (for symmetry with the stream services)."""
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Count and drop ``data``."""
        self.received += len(data)

    def eof_received(self) -> bool:
        """The client is done: close our side too."""
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        """Forget the transport so that nothing keeps the connection alive."""
        if exc is not None:
            log.debug("discard: %s", exc)
        self.transport = None


async def chargen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the character pattern until the client closes or half-closes."""
    async def until_eof() -> None:
        while await reader.read(CHUNK):
            pass

    stopper = asyncio.ensure_future(until_eof())
    try:
        while not stopper.done():
            writer.write(CHARGEN_BLOCK)
            await writer.drain()
    except (ConnectionError, OSError) as e:
        log.debug("chargen: %s", e)
    finally:
        stopper.cancel()
    await _finish(writer)


SERVICES = {ECHO_PORT: echo, DISCARD_PORT: discard, CHARGEN_PORT: chargen}
#: Services run as bare protocols rather than stream handlers (by port).
PROTOCOL_SERVICES: dict[int, Callable[[], asyncio.Protocol]] = {DISCARD_PORT: DiscardProtocol}


async def start_services(api: Any, addresses: list[str]) -> list[Any]:
    """Listen with every service on every address; return the servers.

    ``api`` offers ``start_server`` and ``create_server`` like stack.streams.TcpApi.
    """
    servers = []
    for addr in addresses:
        for port, handler in SERVICES.items():
            factory = PROTOCOL_SERVICES.get(port)
            if factory is not None:
                servers.append(await api.create_server(factory, addr, port))
            else:
                servers.append(await api.start_server(handler, addr, port))
    return servers
