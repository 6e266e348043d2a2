"""SOCKS5 UDP ASSOCIATE (RFC 1928 §7) on the simulated network, exact datagrams."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

import pytest

from apps.socks import protocol as p
from apps.socks import udprelay
from apps.socks.policy import Policy, parse_network
from apps.socks.protocol import Address, Rep
from tests.socks.harness import CLIENT, ORIGIN, PROXY_C, PROXY_S, World, simulate, socks5

UDP_ECHO = 7007
CLIENT_PORT = 5353


class Inbox(asyncio.DatagramProtocol):
    """Keeps every datagram and error it gets."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[Exception] = []
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.got.append((data, addr))
        if self.echo:
            self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def _origin_echo(w: World, port: int = UDP_ECHO) -> Inbox:
    _t, echo = await w.origin_udp.create_datagram_endpoint(lambda: Inbox(echo=True),
                                                           local_addr=(ORIGIN, port))
    return echo


async def _client(w: World, port: int = CLIENT_PORT) -> Inbox:
    _t, inbox = await w.client_udp.create_datagram_endpoint(Inbox, local_addr=(CLIENT, port))
    return inbox


EXPECT = Address.of(CLIENT, CLIENT_PORT)


async def _associate(w: World, expect: Address = EXPECT, **kw):
    reader, writer, (_s, _a, reply) = await socks5(w, expect, command=p.Command.UDP_ASSOCIATE,
                                                   **kw)
    return reader, writer, reply


def _wrap(dest: Address, data: bytes, frag: int = 0) -> bytes:
    return p.UdpHeader(dest, frag).encode() + data


def test_a_datagram_reaches_its_destination_and_the_answer_comes_back_with_a_header():
    async def body(w: World):
        echo = await _origin_echo(w)
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        assert reply.rep == Rep.SUCCEEDED
        relay = (reply.bound.host, reply.bound.port)
        assert relay[0] == PROXY_C and relay[1] > 0
        client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"ping"), relay)
        assert await w.until(lambda: len(client.got) == 1)
        # The origin saw the relay's own address, and the bare data.
        assert echo.got[0][0] == b"ping" and echo.got[0][1][0] == PROXY_S
        # The client gets the data behind a header naming the source (§7), from the relay.
        assert client.got == [(_wrap(Address.of(ORIGIN, UDP_ECHO), b"ping"), relay)]
        writer.close()
        assert await w.until(lambda: len(w.log.sessions) == 1)
        s = w.log.sessions[0]
        assert (s.dest, s.rep, s.up, s.down) == ("udp", 0, 4, 4)
        assert s.note == ("udp associate: 1 datagrams up, 1 down, 1 destinations "
                          f"(first {ORIGIN}:{UDP_ECHO}); control connection closed")

    simulate(body)


def test_the_relay_and_its_sockets_are_released_with_the_control_connection():
    async def body(w: World):
        await _origin_echo(w)
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"x"), relay)
        assert await w.until(lambda: len(client.got) == 1)
        layer = w.proxy.udp.layer
        assert layer.count == 2          # the relay port and one destination socket
        writer.close()
        assert await w.until(lambda: layer.count == 0 and w.proxy.active == 0)
        # The relay port is closed now: a late datagram finds no socket there.
        before = layer.counters["udp_no_port"]
        client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"y"), relay)
        assert await w.until(lambda: layer.counters["udp_no_port"] == before + 1)
        assert len(client.got) == 1

    simulate(body)


def test_with_port_zero_the_first_datagram_fixes_the_clients_port():
    async def body(w: World):
        echo = await _origin_echo(w)
        first, other = await _client(w, 6001), await _client(w, 6002)
        _r, writer, reply = await _associate(w, Address.of("0.0.0.0", 0))
        relay = (reply.bound.host, reply.bound.port)
        first.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"one"), relay)
        assert await w.until(lambda: len(first.got) == 1)
        other.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"two"), relay)
        assert await w.until(lambda: w.proxy.counters["udp_drop_foreign"] == 1)
        assert [d for d, _ in echo.got] == [b"one"] and other.got == []
        writer.close()

    simulate(body)


def test_datagrams_from_another_host_never_pass():
    async def body(w: World):
        echo = await _origin_echo(w)
        _r, writer, reply = await _associate(w, Address.of("0.0.0.0", 0))
        relay = (reply.bound.host, reply.bound.port)
        # A second client host, 198.18.1.1, knows the relay port and tries to use it.
        _t, intruder = await w.client2_udp.create_datagram_endpoint(Inbox)
        intruder.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"evil"), relay)
        assert await w.until(lambda: w.proxy.counters["udp_drop_foreign"] == 1)
        assert echo.got == [] and intruder.got == []
        writer.close()

    simulate(body, clients=2)


@pytest.mark.parametrize("datagram, reason", [
    (_wrap(Address.of(ORIGIN, UDP_ECHO), b"frag", frag=1), "fragment"),
    (b"\x00\x01\x00" + Address.of(ORIGIN, UDP_ECHO).encode() + b"rsv", "bad_header"),
    (b"\x00\x00\x00\x01\xc6\x13", "bad_header"),           # the address is cut off
    (b"\x00\x00", "bad_header"),
    (b"\x00\x00\x00\x09" + b"\x00" * 8, "bad_header"),     # no such ATYP
])
def test_bad_datagrams_are_dropped_and_counted_and_the_association_goes_on(datagram, reason):
    async def body(w: World):
        echo = await _origin_echo(w)
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        client.transport.sendto(datagram, relay)
        assert await w.until(lambda: w.proxy.counters[f"udp_drop_{reason}"] == 1)
        client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"good"), relay)
        assert await w.until(lambda: len(client.got) == 1)
        assert [d for d, _ in echo.got] == [b"good"]
        writer.close()
        assert await w.until(lambda: len(w.log.sessions) == 1)
        assert f"dropped {reason}=1" in w.log.sessions[0].note

    simulate(body)


def test_names_resolve_and_the_answer_names_the_address():
    policy = Policy(hosts={"echo.test": ORIGIN})

    async def body(w: World):
        echo = await _origin_echo(w)
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        client.transport.sendto(_wrap(Address.of("echo.test", UDP_ECHO), b"n"), relay)
        client.transport.sendto(_wrap(Address.of("nowhere.test", UDP_ECHO), b"m"), relay)
        assert await w.until(lambda: len(client.got) == 1
                             and w.proxy.counters["udp_drop_unresolved"] == 1)
        assert [d for d, _ in echo.got] == [b"n"]
        assert client.got[0][0] == _wrap(Address.of(ORIGIN, UDP_ECHO), b"n")
        writer.close()

    simulate(body, policy=policy)


def test_the_access_rules_apply_to_every_destination():
    policy = Policy(allow_dests=(parse_network("198.19.0.0/24"),),
                    allow_ports=frozenset({UDP_ECHO}))

    async def body(w: World):
        echo = await _origin_echo(w)
        await _origin_echo(w, 7008)
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        for dest in (Address.of(ORIGIN, 7008), Address.of("198.18.0.1", UDP_ECHO),
                     Address.of(ORIGIN, UDP_ECHO)):
            client.transport.sendto(_wrap(dest, b"?"), relay)
        assert await w.until(lambda: len(client.got) == 1)
        assert w.proxy.counters["udp_drop_not_allowed"] == 2
        assert len(echo.got) == 1
        writer.close()

    simulate(body, policy=policy)


def test_with_users_the_association_needs_the_password():
    policy = Policy(users={"alice": "secret"})

    async def body(w: World):
        await _origin_echo(w)
        client = await _client(w)
        _r, w1, (sel, _a, reply) = await socks5(w, Address.of(CLIENT, CLIENT_PORT),
                                                command=p.Command.UDP_ASSOCIATE)
        assert sel.method == p.Method.NO_ACCEPTABLE and reply is None
        _r, w2, (_s, auth, reply) = await socks5(w, Address.of(CLIENT, CLIENT_PORT),
                                                 methods=(2,), creds=(b"alice", b"secret"),
                                                 command=p.Command.UDP_ASSOCIATE)
        assert auth.ok and reply.rep == Rep.SUCCEEDED
        client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"a"),
                                (reply.bound.host, reply.bound.port))
        assert await w.until(lambda: len(client.got) == 1)
        w1.close()
        w2.close()

    simulate(body, policy=policy)


def test_an_idle_association_ends_and_its_control_connection_is_closed():
    policy = Policy(udp_idle_timeout=30.0)

    async def body(w: World):
        await _origin_echo(w)
        client = await _client(w)
        reader, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        t0 = w.now
        await asyncio.sleep(20)
        client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO), b"keep"), relay)
        assert await reader.read(1) == b""          # EOF: the proxy ended it...
        assert 49 < w.now - t0 < 52                  # ...30 s after the last datagram
        assert await w.until(lambda: len(w.log.sessions) == 1)
        assert w.log.sessions[0].note.endswith("; idle timeout")
        assert w.proxy.udp.layer.count == 0
        writer.close()

    simulate(body, policy=policy)


def test_destination_sockets_are_bounded(monkeypatch):
    monkeypatch.setattr(udprelay, "MAX_PEERS", 2)

    async def body(w: World):
        echoes = [await _origin_echo(w, UDP_ECHO + i) for i in range(3)]
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        for i in range(3):
            client.transport.sendto(_wrap(Address.of(ORIGIN, UDP_ECHO + i), b"b"), relay)
            assert await w.until(lambda n=i + 1: len(client.got) == n)
        assert [len(e.got) for e in echoes] == [1, 1, 1]
        assert w.proxy.udp.layer.count == 1 + 2     # the relay and the two newest
        writer.close()
        assert await w.until(lambda: len(w.log.sessions) == 1)
        assert "3 destinations" in w.log.sessions[0].note

    simulate(body)


def test_datagrams_waiting_for_a_name_are_bounded(monkeypatch):
    monkeypatch.setattr(udprelay, "MAX_PENDING", 4)
    never = asyncio.Event()
    asked: list[str] = []

    async def stuck(name: str) -> list[str]:
        asked.append(name)
        await never.wait()      # a resolver that never answers
        return []

    async def body(w: World):
        w.proxy.resolve = stuck
        client = await _client(w)
        _r, writer, reply = await _associate(w)
        relay = (reply.bound.host, reply.bound.port)
        client.transport.sendto(_wrap(Address.of("slow.test", 53), b"q"), relay)
        assert await w.until(lambda: asked == ["slow.test"])
        for _ in range(9):
            client.transport.sendto(_wrap(Address.of("slow.test", 53), b"q"), relay)
        # One is being resolved, four wait, the other five are dropped.
        assert await w.until(lambda: w.proxy.counters["udp_drop_queue_full"] == 5)
        writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy.udp.layer.count == 0)

    simulate(body)


def test_a_proxy_without_udp_or_with_workers_and_no_client_port_refuses_clearly():
    async def body(w: World):
        w.proxy_api.seat = SimpleNamespace(count=2)
        _r, w1, reply = await _associate(w, Address.of("0.0.0.0", 0))
        assert reply.rep == Rep.COMMAND_NOT_SUPPORTED
        _r, w2, reply = await _associate(w)           # the port is known: fine
        assert reply.rep == Rep.SUCCEEDED
        w.proxy.udp = None
        _r, w3, reply = await _associate(w)
        assert reply.rep == Rep.COMMAND_NOT_SUPPORTED
        for writer in (w1, w2, w3):
            writer.close()
        assert await w.until(lambda: len(w.log.sessions) == 3)
        notes = sorted(s.note for s in w.log.sessions)
        assert "udp associate without the client's port needs a single worker" in notes
        assert "udp associate: no UDP on this stack" in notes

    simulate(body)


def test_the_reply_names_the_relay_as_an_ipv4_address():
    async def body(w: World):
        _r, writer, reply = await _associate(w)
        assert reply.bound.atyp == p.Atyp.IPV4
        assert ipaddress.ip_address(reply.bound.host) == ipaddress.ip_address(PROXY_C)
        writer.close()

    simulate(body)
