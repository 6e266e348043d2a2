"""The classic test services on the stack: echo (RFC 862), discard (RFC 863) and
chargen (RFC 864), over TCP and over UDP.

Echo and chargen are asyncio stream handlers. Discard is a bare protocol
(:class:`DiscardProtocol`): it needs no task, reader or writer per connection, so
thousands of idle connections on it cost little more than their TCP state.
"""

from __future__ import annotations

import asyncio
import logging
import random
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


class UdpEcho(asyncio.DatagramProtocol):
    """UDP echo (RFC 862): every datagram goes back to its sender as it came. The
    reply is never larger than the request, so it amplifies nothing."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.datagrams = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send ``data`` back to ``addr``."""
        self.datagrams += 1
        if self.transport is not None:
            self.transport.sendto(data, addr)


class UdpDiscard(asyncio.DatagramProtocol):
    """UDP discard (RFC 863): datagrams are counted and dropped."""

    def __init__(self) -> None:
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Count and drop."""
        self.datagrams += 1


#: Chargen answers at most this many datagrams per second (and a burst of as many):
#: up to 512 bytes for an empty request make it a reflection amplifier otherwise.
CHARGEN_UDP_RATE = 100.0


class UdpChargen(UdpEcho):
    """UDP chargen (RFC 864): each datagram is answered with one of a random length
    between 0 and 512 characters of the pattern, under a rate limit (see
    CHARGEN_UDP_RATE); requests past it are counted in ``limited``."""

    def __init__(self, rng: random.Random | None = None,
                 rate: float = CHARGEN_UDP_RATE) -> None:
        super().__init__()
        self.rng = rng or random.Random()
        self.rate = rate
        self.tokens = rate
        self.stamp: float | None = None
        self.limited = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Answer with up to 512 characters, if the rate allows."""
        self.datagrams += 1
        now = asyncio.get_running_loop().time()
        if self.stamp is not None:
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            self.limited += 1
            return
        self.tokens -= 1.0
        start = self.rng.randrange(95)  # the 95 rotations of the pattern
        n = self.rng.randint(0, 512)
        if self.transport is not None:
            self.transport.sendto(CHARGEN_BLOCK[start * 74:start * 74 + n], addr)


SERVICES = {ECHO_PORT: echo, DISCARD_PORT: discard, CHARGEN_PORT: chargen}
#: The UDP forms of the services, by port.
UDP_SERVICES: dict[int, Callable[[], asyncio.DatagramProtocol]] = {
    ECHO_PORT: UdpEcho, DISCARD_PORT: UdpDiscard, CHARGEN_PORT: UdpChargen}
#: Services run as bare protocols rather than stream handlers (by port).
PROTOCOL_SERVICES: dict[int, Callable[[], asyncio.Protocol]] = {DISCARD_PORT: DiscardProtocol}


async def start_services(api: Any, addresses: list[str]) -> list[Any]:
    """Listen with every service on every address; return the servers.

    ``api`` offers ``start_server`` and ``create_server`` like stack.streams.TcpApi;
    with ``create_datagram_endpoint`` too (a TapStack), the UDP forms are started as
    well and their transports are among what is returned.
    """
    servers: list[Any] = []
    for addr in addresses:
        if hasattr(api, "create_datagram_endpoint"):
            for port, udp_factory in UDP_SERVICES.items():
                transport, _proto = await api.create_datagram_endpoint(
                    udp_factory, local_addr=(addr, port))
                servers.append(transport)
        for port, handler in SERVICES.items():
            factory = PROTOCOL_SERVICES.get(port)
            if factory is not None:
                servers.append(await api.create_server(factory, addr, port))
            else:
                servers.append(await api.start_server(handler, addr, port))
    return servers
