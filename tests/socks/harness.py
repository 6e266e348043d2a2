"""A three-host simulated network for the SOCKS server: client, proxy, origin.

client 198.18.0.1 --- 198.18.0.2 proxy 198.19.0.2 --- 198.19.0.1 origin

With ``clients=2`` a second client 198.18.1.1 sits behind the first (which forwards),
so that it reaches the proxy through the same interface from another address.

The origin runs a few services; tests drive a client written with the codecs.
Everything runs on virtual time, so timeouts cost nothing and runs repeat exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from apps.socks import protocol as p
from apps.socks.policy import Policy
from apps.socks.server import SocksServer
from splice.testing.sim import splice_api
from stack.sim import SimNetwork
from stack.simloop import run, until
from stack.streams import TcpApi

CLIENT, PROXY_C, PROXY_S, ORIGIN = "198.18.0.1", "198.18.0.2", "198.19.0.2", "198.19.0.1"
CLIENT2 = "198.18.1.1"
SOCKS_PORT = 1080
ECHO, REPORT, RESET, SILENT = 7, 8, 9, 10


class Records(logging.Handler):
    """Collects access-log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sessions: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.sessions.append(record.socks)


@dataclass
class World:
    """What a test body gets."""

    client: TcpApi
    proxy: SocksServer
    proxy_api: TcpApi
    origin: TcpApi
    log: Records
    client2: TcpApi | None = None
    #: The asyncio UDP APIs of the client and the origin (UDP ASSOCIATE tests).
    client_udp: Any = None
    origin_udp: Any = None
    client2_udp: Any = None

    @property
    def now(self) -> float:
        """Virtual time."""
        return asyncio.get_running_loop().time()

    async def until(self, predicate: Callable[[], bool], timeout: float = 300.0) -> bool:
        """Let virtual time run (in 0.5 s steps) until ``predicate()`` or ``timeout``."""
        return await until(predicate, timeout, step=0.5)

    @property
    def splicer(self):
        """The proxy's splice layer (splice mode), else None."""
        sp = self.proxy.splice
        return None if sp is None else sp.splicer

    def proxy_connections(self) -> int:
        """Connections in the proxy's TCP table, TIME_WAIT excluded."""
        return sum(1 for tcb in self.proxy_api.tcp.connections.values()
                   if tcb.state.name != "TIME_WAIT")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _report(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to EOF (the client's half-close), then answer with the byte count and close."""
    n = 0
    while data := await reader.read(65536):
        n += len(data)
    writer.write(f"got {n}".encode())
    await writer.drain()
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reset the connection after the first bytes."""
    await reader.read(100)
    writer.transport.abort()


#: How each connection to the SILENT service ended: "eof" or "reset".
ENDINGS: list[str] = []


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep the connection open and say nothing until the client closes or resets."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        ENDINGS.append("reset")
    else:
        ENDINGS.append("eof")
    writer.close()


#: The relay mode of simulate() when a test does not choose one (tests/socks/conftest.py
#: runs the server tests once per mode).
DEFAULT_MODE = {"mode": "copy"}


def simulate(body: Callable[[World], Awaitable[Any]], *, policy: Policy | None = None,
             mode: str | None = None, seed: int = 1, clients: int = 1) -> Any:
    """Run ``body`` in a fresh three-host network with a SOCKS server on the proxy
    (four hosts with ``clients=2``)."""
    mode = mode or DEFAULT_MODE["mode"]
    net = SimNetwork(seed)
    c = net.add_host("client", forwarding=clients > 1)
    px, o = net.add_host("proxy"), net.add_host("origin")
    net.connect(c, f"{CLIENT}/24", px, f"{PROXY_C}/24")
    net.connect(px, f"{PROXY_S}/24", o, f"{ORIGIN}/24")
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)
    c2 = second_client(net, c, px) if clients > 1 else None
    records = Records()
    ENDINGS.clear()
    access = logging.getLogger(f"tests.socks.access.{id(records)}")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(records)

    async def main(driver) -> Any:
        origin = driver.tcp(o)
        for port, handler in ((ECHO, _echo), (REPORT, _report), (RESET, _reset),
                              (SILENT, _silent)):
            await origin.start_server(handler, ORIGIN, port)
        proxy_api = driver.tcp(px)
        splice = splice_api(driver, px) if mode == "splice" else None
        proxy = SocksServer(proxy_api, mode=mode, policy=policy, log=access, splice=splice,
                            udp=driver.udp(px))
        await proxy.start(PROXY_C, SOCKS_PORT)
        return await body(World(driver.tcp(c), proxy, proxy_api, origin, records,
                                driver.tcp(c2) if c2 is not None else None,
                                client_udp=driver.udp(c), origin_udp=driver.udp(o),
                                client2_udp=driver.udp(c2) if c2 is not None else None))

    try:
        return run(main, net)
    finally:
        access.removeHandler(records)


def second_client(net: SimNetwork, client, proxy):
    """A host at CLIENT2 behind ``client``; the proxy routes to it through ``client``."""
    c2 = net.add_host("client2")
    net.connect(c2, f"{CLIENT2}/24", client, "198.18.1.2/24")
    c2.add_route("0.0.0.0/0", "198.18.1.2")
    proxy.add_route("198.18.1.0/24", CLIENT)
    return c2


# -- a small SOCKS client written with the codecs -------------------------------------------

async def read_message(reader: asyncio.StreamReader, parse):
    """Read byte by byte until ``parse`` gives a message, so that nothing after it is
    consumed; None if the connection ends first."""
    buf = bytearray()
    while (got := parse(buf)) is None:
        data = await reader.read(1)
        if not data:
            return None
        buf += data
    msg, n = got
    assert n == len(buf)
    return msg


async def socks5(world: World, dest: p.Address, *, methods: tuple[int, ...] = (0,),
                 creds: tuple[bytes, bytes] | None = None, command: int = p.Command.CONNECT,
                 early: bytes = b"", client: TcpApi | None = None):
    """Open a connection through the proxy (from ``client``, by default the first).
    Returns (reader, writer, answers) where answers holds the method selection, the
    RFC 1929 response and the reply, each None when the proxy closed before sending it."""
    api = client or world.client
    reader, writer = await api.open_connection(PROXY_C, SOCKS_PORT)
    request = p.Request(command, dest).encode()
    writer.write(p.Greeting(methods).encode())
    if creds is None:
        writer.write(request + early)  # pipelined: no wait for the method selection
    selection = await read_message(reader, p.parse_method_selection)
    auth = None
    if creds is not None and selection is not None and selection.method == p.Method.USERPASS:
        writer.write(p.UserPassRequest(*creds).encode())
        auth = await read_message(reader, p.parse_userpass_response)
        if auth is not None and auth.ok:
            writer.write(request + early)
    reply = None
    if selection is not None and selection.method != p.Method.NO_ACCEPTABLE and (
            creds is None or (auth is not None and auth.ok)):
        reply = await read_message(reader, p.parse_reply)
    return reader, writer, (selection, auth, reply)


async def read_all(reader: asyncio.StreamReader, limit: int = 1 << 26) -> bytes:
    """Everything until EOF (bounded)."""
    out = bytearray()
    while len(out) < limit and (data := await reader.read(1 << 18)):
        out += data
    return bytes(out)
