"""An in-process stand-in for the stack's asyncio face, with scripted DNS servers.

``FakeNet.create_datagram_endpoint`` hands out connected fake transports on random
ports; what a transport sends to an address with a handler is decoded with dnspython
and given to the handler, whose actions are delivered back with ``loop.call_later``.
Everything runs on :class:`stack.simloop.VirtualTimeLoop`, so latencies are exact.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from stack.simloop import VirtualTimeLoop

CLIENT = "198.18.0.1"
S1 = ("198.18.0.53", 53)
S2 = ("198.18.0.54", 53)
T = TypeVar("T")


@dataclass
class Send:
    """Deliver ``data`` to the querying endpoint after ``delay`` from ``src``."""

    data: bytes
    delay: float = 0.125
    src: tuple[str, int] | None = None


@dataclass
class Unreachable:
    """Report an ICMP port unreachable to the querying endpoint after ``delay``."""

    delay: float = 0.125


Action = Send | Unreachable
Handler = Callable[[dns.message.Message], list[Action]]


@dataclass
class Sent:
    """A query as the fake network saw it leave."""

    at: float
    src_port: int
    dst: tuple[str, int]
    query: dns.message.Message
    via: str = "udp"


class FakeTransport(asyncio.DatagramTransport):
    """A connected datagram endpoint of the fake network."""

    def __init__(self, net: FakeNet, proto: Any, port: int, peer: tuple[str, int]) -> None:
        super().__init__()
        self.net, self.proto, self.port, self.peer = net, proto, port, peer
        self.closed = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.net.transmit(self, bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.proto.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": (CLIENT, self.port), "peername": self.peer}.get(name, default)

    def deliver(self, data: bytes, src: tuple[str, int]) -> None:
        if not self.closed:
            self.proto.datagram_received(data, src)

    def icmp(self) -> None:
        if not self.closed:
            self.proto.error_received(ConnectionRefusedError("port unreachable"))


class FakeWriter:
    """The StreamWriter half of a fake TCP connection to a scripted server."""

    def __init__(self, net: FakeNet, reader: asyncio.StreamReader, handler: Handler,
                 peer: tuple[str, int]) -> None:
        self.net, self.reader, self.handler, self.peer = net, reader, handler, peer
        self.buffer = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            (size,) = struct.unpack("!H", self.buffer[:2])
            if len(self.buffer) < 2 + size:
                break
            wire, self.buffer = self.buffer[2:2 + size], self.buffer[2 + size:]
            query = dns.message.from_wire(wire)
            self.net.sent.append(Sent(self.net.now(), 0, self.peer, query, "tcp"))
            loop = asyncio.get_running_loop()
            for action in self.handler(query):
                assert isinstance(action, Send)
                framed = struct.pack("!H", len(action.data)) + action.data
                loop.call_later(action.delay, self._feed, framed)

    def _feed(self, data: bytes) -> None:
        if not self.closed:
            self.reader.feed_data(data)

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None


@dataclass
class FakeNet:
    """Scripted UDP and TCP DNS servers keyed by (address, port)."""

    seed: int = 0
    udp: dict[tuple[str, int], Handler] = field(default_factory=dict)
    tcp: dict[tuple[str, int], Handler] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    endpoints: list[FakeTransport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def queries(self, via: str = "udp") -> list[Sent]:
        return [s for s in self.sent if s.via == via]

    def open_endpoints(self) -> int:
        return sum(1 for t in self.endpoints if not t.closed)

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], Any],
                                       local_addr: Any = None,
                                       remote_addr: Any = None) -> tuple[Any, Any]:
        assert local_addr is None and remote_addr is not None
        proto = protocol_factory()
        transport = FakeTransport(self, proto, self.rng.randrange(1024, 65536),
                                  tuple(remote_addr))
        self.endpoints.append(transport)
        proto.connection_made(transport)
        return transport, proto

    def transmit(self, transport: FakeTransport, data: bytes) -> None:
        query = dns.message.from_wire(data)
        self.sent.append(Sent(self.now(), transport.port, transport.peer, query))
        handler = self.udp.get(transport.peer)
        if handler is None:
            return
        loop = asyncio.get_running_loop()
        for action in handler(query):
            if isinstance(action, Unreachable):
                loop.call_later(action.delay, transport.icmp)
            else:
                loop.call_later(action.delay, transport.deliver, action.data,
                                action.src or transport.peer)

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        handler = self.tcp.get((host, port))
        if handler is None:
            raise ConnectionRefusedError(f"nothing listens on {host}:{port}")
        reader = asyncio.StreamReader()
        return reader, FakeWriter(self, reader, handler, (host, port))


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh virtual-time loop (starting at t=1000)."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def reply(query: dns.message.Message, *records: str, rcode: int = dns.rcode.NOERROR,
          soa: tuple[int, int] | None = None, tc: bool = False,
          authority: str = "example.") -> bytes:
    """A response to ``query`` whose answer holds ``records`` (zone-file text such as
    "www.example. 30 IN A 198.18.1.1"); ``soa`` = (TTL, MINIMUM) in the authority."""
    resp = dns.message.make_response(query)
    resp.set_rcode(rcode)
    for text in records:
        resp.answer.append(dns.rrset.from_text(*_split(text)))
    if soa is not None:
        ttl, minimum = soa
        resp.authority.append(dns.rrset.from_text(
            authority, ttl, "IN", "SOA", f"ns.{authority} host.{authority} 1 7200 900 "
            f"1209600 {minimum}"))
    if tc:
        resp.flags |= dns.flags.TC
    # No size limit here: what the resolver does with a too large datagram is tested.
    return resp.to_wire(max_size=65535)


def _split(text: str) -> tuple[str, int, str, str, str]:
    name, ttl, rdclass, rdtype, rdata = text.split(None, 4)
    return name, int(ttl), rdclass, rdtype, rdata


def qtype(query: dns.message.Message) -> str:
    """The query's question type as text."""
    return dns.rdatatype.to_text(query.question[0].rdtype)


def qname(query: dns.message.Message) -> str:
    """The query's question name as text, lower case."""
    return query.question[0].name.to_text().lower()
