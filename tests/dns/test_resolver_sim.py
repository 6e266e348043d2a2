"""The resolver over the real stack: UDP and TCP on a simulated link, virtual time.

Host a (198.18.0.1) runs the resolver; host b (198.18.0.2) runs a small DNS server
built with dnspython on the stack's UDP and TCP; host c (198.18.1.2, a second link
from a) is the third host: a spoofer, or a host with no DNS server at all.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import dns.message
import dns.rrset

from stack.dns import Resolver, ResolverConfig
from stack.sim import SimNetwork
from stack.simloop import SimDriver, run
from tests.dns.fakenet import reply

A, B, C_SIDE, C = "198.18.0.1", "198.18.0.2", "198.18.1.1", "198.18.1.2"
GOOD, EVIL = "198.18.2.1", "198.18.6.6"

# What the server does with a UDP query: the datagrams to send back (may be none).
Policy = Callable[[dns.message.Message, int], list[bytes]]


def _net() -> tuple[SimNetwork, Any, Any, Any]:
    net = SimNetwork(7)
    a, b, c = net.add_host("a"), net.add_host("b"), net.add_host("c")
    net.connect(a, f"{A}/24", b, f"{B}/24")
    net.connect(a, f"{C_SIDE}/24", c, f"{C}/24")
    c.add_route("198.18.0.0/24", C_SIDE)  # c reaches a's first address through a
    return net, a, b, c


class StackNet:
    """The resolver's ``net``: host a's UDP and TCP APIs."""

    def __init__(self, driver: SimDriver, host: Any) -> None:
        self.udp, self.tcp = driver.udp(host), driver.tcp(host)

    async def create_datagram_endpoint(self, factory, local_addr=None, remote_addr=None):
        return await self.udp.create_datagram_endpoint(factory, local_addr=local_addr,
                                                       remote_addr=remote_addr)

    async def open_connection(self, host: str, port: int):
        return await self.tcp.open_connection(host, port)


class UdpServer(asyncio.DatagramProtocol):
    """Answers each query as ``policy`` says, and remembers who asked."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.seen: list[tuple[dns.message.Message, tuple[str, int]]] = []
        self.transport: Any = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        query = dns.message.from_wire(data)
        self.seen.append((query, addr))
        for wire in self.policy(query, len(self.seen)):
            self.transport.sendto(wire, addr)


def answer(q: dns.message.Message, *addrs: str, ttl: int = 30) -> bytes:
    name = q.question[0].name
    return reply(q, *(f"{name} {ttl} IN A {addr}" for addr in addrs))


async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFC 7766 §8 framing; every name has 100 addresses over TCP."""
    while True:
        try:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            query = dns.message.from_wire(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            break
        wire = answer(query, *(f"198.18.3.{i}" for i in range(1, 101)))
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
    writer.close()


async def start_server(driver: SimDriver, host: Any, policy: Policy) -> UdpServer:
    _t, server = await driver.udp(host).create_datagram_endpoint(
        lambda: UdpServer(policy), local_addr=(B, 53))
    await driver.tcp(host).start_server(serve_tcp, B, 53)
    return server


def _resolve(policy: Policy, servers: list[tuple[str, int]], name: str = "www.example"):
    """Run one resolve() on a; returns (result or exception, seconds taken, resolver,
    what b's server saw)."""
    net, a, b, c = _net()

    async def main(driver: SimDriver):
        server = await start_server(driver, b, policy)
        driver.udp(c)  # UDP on c: a closed port there answers port unreachable
        res = Resolver(StackNet(driver, a), servers, config=ResolverConfig(timeout=1.0))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            got: Any = await res.resolve(name)
        except OSError as exc:
            got = exc
        return got, loop.time() - t0, res, server.seen
    return run(main, net)


def test_an_answer_over_the_stack():
    got, took, res, seen = _resolve(lambda q, n: [answer(q, GOOD)], [(B, 53)])
    assert got == [GOOD]
    assert took < 0.1
    (query, (src, port)), = seen
    assert src == A and 1024 <= port <= 65535
    assert query.question[0].name.to_text() == "www.example."
    assert res.counters["answers"] == 1


def test_a_lost_query_times_out_and_the_retry_is_answered():
    got, took, res, seen = _resolve(lambda q, n: [] if n == 1 else [answer(q, GOOD)],
                                    [(B, 53)])
    assert got == [GOOD]
    assert 1.0 <= took < 1.1
    assert len(seen) == 2 and seen[0][1][1] != seen[1][1][1]  # a fresh port per query
    assert seen[0][0].id != seen[1][0].id
    assert res.counters["timeout"] == 1


def test_a_truncated_answer_is_asked_again_over_tcp():
    got, took, res, _seen = _resolve(lambda q, n: [reply(q, tc=True)], [(B, 53)])
    assert isinstance(got, list) and len(got) == 64 and got[0] == "198.18.3.1"
    assert res.counters["tcp_fallback"] == 1
    assert took < 1.0


def test_a_forged_answer_with_a_wrong_id_from_the_server_is_ignored():
    def policy(q, n):
        evil = dns.message.make_response(dns.message.make_query(
            q.question[0].name, "A", id=(q.id + 1) % 65536))
        evil.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", EVIL))
        return [evil.to_wire(), answer(q, GOOD)]
    got, _took, res, _seen = _resolve(policy, [(B, 53)])
    assert got == [GOOD]
    assert res.counters["drop.id"] == 1


def test_a_forged_answer_from_a_third_host_is_ignored():
    net, a, b, c = _net()

    async def main(driver: SimDriver):
        server = await start_server(driver, b, lambda q, n: [])
        res = Resolver(StackNet(driver, a), [(B, 53)], config=ResolverConfig(timeout=1.0))
        forger, _p = await driver.udp(c).create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(C, 53))

        def policy(q, n):
            # c learns the query's port and ID (as an on-path spoofer would) and answers
            # first, from its own port 53; b's real answer follows 0.125 s later.
            port = server.seen[-1][1][1]
            forger.sendto(answer(q, EVIL), (A, port))
            asyncio.get_running_loop().call_later(
                0.125, server.transport.sendto, answer(q, GOOD), (A, port))
            return []
        server.policy = policy
        before = dict(a.counters)
        got = await res.resolve("www.example")
        return got, res, before
    got, res, before = run(main, net)
    assert got == [GOOD]
    assert res.counters["answers"] == 1
    gained = {k: v - before.get(k, 0) for k, v in a.counters.items() if v != before.get(k, 0)}
    # The forgery reached a, matched no socket (ours is connected to b) and was refused.
    assert gained.get("icmp_sent_3_3") == 1, gained


def test_port_unreachable_from_a_host_without_a_server_moves_on_at_once():
    got, took, res, seen = _resolve(lambda q, n: [answer(q, GOOD)], [(C, 53), (B, 53)])
    assert got == [GOOD]
    assert took < 0.1  # far below the 1 s per-try timeout
    assert res.counters["unreachable"] == 1 and res.counters["timeout"] == 0
    assert len(seen) == 1
