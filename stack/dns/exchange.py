"""One query to one server: over UDP on a fresh endpoint, or over TCP.

Every datagram is checked as RFC 5452 §3 and §9.1 ask before it may end the try: it
must come from the server's address and port, parse cleanly, be a response (QR) to a
standard QUERY, carry the query's ID and repeat its question (name compared without
regard to case, RFC 1035 §2.3.3). Anything else is dropped, counted by reason, and the
try goes on waiting, so a forged or broken datagram can neither end nor poison it.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import struct
from collections.abc import Callable
from typing import Any, Protocol

import dns.flags
import dns.message
import dns.name
import dns.opcode

log = logging.getLogger("tapsplice.dns")

Address = tuple[str, int]


class DatagramNet(Protocol):
    """What the resolver needs from the stack: asyncio's datagram and stream calls."""

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], Any],
                                       local_addr: Any = None,
                                       remote_addr: Any = None) -> tuple[Any, Any]:
        """A connected datagram endpoint on a fresh ephemeral port."""

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        """A TCP connection as (StreamReader, StreamWriter)."""


class Status(enum.Enum):
    """A try that ended without a usable message."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    TRUNCATED = "truncated"


Reply = dns.message.Message | Status
Drop = Callable[[str], None]


class Dropped(Exception):
    """A datagram that is not the answer; ``reason`` names the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mismatch(msg: dns.message.Message, query: dns.message.Message) -> str | None:
    """Why ``msg`` is not the answer to ``query`` (RFC 5452 §3), or None if it is."""
    if msg.id != query.id:
        return "id"
    if not msg.flags & dns.flags.QR:
        return "not_response"
    if msg.opcode() != dns.opcode.QUERY:
        return "opcode"
    if len(msg.question) != 1:
        return "question"
    asked, got = query.question[0], msg.question[0]
    # dns.name.Name equality ignores case (RFC 1035 §2.3.3).
    if got.name != asked.name or got.rdtype != asked.rdtype or got.rdclass != asked.rdclass:
        return "question"
    return None


def read_reply(data: bytes, query: dns.message.Message, max_size: int, *,
               udp: bool) -> dns.message.Message | Status:
    """The answer in ``data``, Status.TRUNCATED for a matching TC=1 answer over UDP,
    or :class:`Dropped` saying why ``data`` is not the answer."""
    if len(data) > max_size:
        raise Dropped("oversized")
    truncated = False
    try:
        msg = dns.message.from_wire(data, raise_on_truncation=udp)
    except dns.message.Truncated as exc:
        msg, truncated = exc.message(), True
    except dns.message.TrailingJunk:
        raise Dropped("trailing") from None
    except dns.name.BadPointer:
        raise Dropped("compression") from None
    except dns.message.ShortHeader:
        raise Dropped("short") from None
    except Exception:  # noqa: BLE001 - bytes off the network must never end the try
        raise Dropped("malformed") from None
    reason = mismatch(msg, query)
    if reason is not None:
        raise Dropped(reason)
    return Status.TRUNCATED if truncated else msg


def same_endpoint(addr: Any, server: Address) -> str | None:
    """Why a datagram from ``addr`` did not come from ``server``, or None."""
    try:
        host, port = addr[0], addr[1]
        if ipaddress.ip_address(host) != ipaddress.ip_address(server[0]):
            return "address"
    except (TypeError, ValueError, IndexError):
        return "address"
    return None if port == server[1] else "port"


class AnswerProtocol(asyncio.DatagramProtocol):
    """Waits on one connected endpoint for the answer to one query."""

    def __init__(self, query: dns.message.Message, server: Address, max_size: int,
                 drop: Drop) -> None:
        self.query = query
        self.server = server
        self.max_size = max_size
        self.drop = drop
        self.done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Take the first datagram that is the answer; count and drop the rest."""
        if self.done.done():
            self.drop("late")
            return
        reason = same_endpoint(addr, self.server)
        if reason is not None:
            self.drop(reason)
            return
        try:
            reply = read_reply(bytes(data), self.query, self.max_size, udp=True)
        except Dropped as exc:
            self.drop(exc.reason)
            return
        self.done.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        """An ICMP port unreachable (RFC 1122 §4.1.3.3) ends the try at once."""
        if isinstance(exc, ConnectionRefusedError) and not self.done.done():
            self.done.set_result(Status.UNREACHABLE)
        else:
            self.drop("icmp_other")

    def connection_lost(self, exc: Exception | None) -> None:
        """The stack closed the endpoint under us: nothing more can arrive."""
        if not self.done.done():
            self.done.set_result(Status.UNREACHABLE)


async def udp_exchange(net: DatagramNet, server: Address, query: dns.message.Message,
                       timeout: float, max_size: int, drop: Drop) -> Reply:
    """Send ``query`` from a fresh random port (RFC 5452 §9.2) and wait ``timeout``."""
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await net.create_datagram_endpoint(
                lambda: AnswerProtocol(query, server, max_size, drop),
                local_addr=None, remote_addr=server)
            transport.sendto(query.to_wire())
            return await proto.done
    except TimeoutError:
        return Status.TIMEOUT
    except OSError as exc:
        log.debug("udp to %s:%d failed: %s", server[0], server[1], exc)
        return Status.UNREACHABLE
    finally:
        if transport is not None:
            transport.close()


async def _read_answer(reader: Any, query: dns.message.Message, drop: Drop) -> Reply:
    # RFC 7766 §8: each message is preceded by its length as a 2-octet field.
    while True:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        data = await reader.readexactly(size)
        try:
            return read_reply(data, query, 65535, udp=False)
        except Dropped as exc:
            drop("tcp_" + exc.reason)


async def tcp_exchange(net: DatagramNet, server: Address, query: dns.message.Message,
                       timeout: float, drop: Drop) -> Reply:
    """Ask over TCP (RFC 7766 §5, after a truncated UDP answer) within ``timeout``."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await net.open_connection(server[0], server[1])
            writer.write(query.to_wire(prepend_length=True))
            await writer.drain()
            return await _read_answer(reader, query, drop)
    except TimeoutError:
        return Status.TIMEOUT
    except (OSError, asyncio.IncompleteReadError) as exc:
        log.debug("tcp to %s:%d failed: %s", server[0], server[1], exc)
        return Status.UNREACHABLE
    finally:
        if writer is not None:
            writer.close()
