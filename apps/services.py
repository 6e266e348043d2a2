"""The classic test services on the stack: echo (RFC 862), discard (RFC 863) and
chargen (RFC 864), as asyncio stream handlers."""

from __future__ import annotations

import asyncio
import logging

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
    """Read and throw away everything until the client closes."""
    try:
        while await reader.read(CHUNK):
            pass
    except (ConnectionError, OSError) as e:
        log.debug("discard: %s", e)
    await _finish(writer)


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


async def start_services(api, addresses: list[str]) -> list:
    """Listen with every service on every address; return the servers."""
    servers = []
    for addr in addresses:
        for port, handler in SERVICES.items():
            servers.append(await api.start_server(handler, addr, port))
    return servers
