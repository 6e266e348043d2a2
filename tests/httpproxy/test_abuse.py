"""The HTTP proxy against abusive clients: password guessing, slot hogging. Two
client hosts (198.18.0.1 and, behind it, 198.18.1.1) on the simulated network."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apps.httpproxy.policy import HttpPolicy
from apps.httpproxy.server import HttpProxy
from stack.sim import SimNetwork
from stack.simloop import run
from tests.httpproxy import harness
from tests.httpproxy.harness import (
    CLIENT,
    EPOCH,
    HTTP,
    ORIGIN,
    PROXY_C,
    PROXY_PORT,
    PROXY_S,
    Origin,
    Records,
    World,
    fetch,
    origin_url,
)
from tests.socks.harness import CLIENT2, second_client

ALL_CLIENTS = (ipaddress.ip_network("198.18.0.0/16"),)


def simulate2(body: Callable[[World, Any], Awaitable[Any]], policy: HttpPolicy,
              **proxy_kw: Any) -> Any:
    """Like harness.simulate (copy mode, no cache), with a second client host; ``body``
    gets the World and the second client's TcpApi."""
    net = SimNetwork(1)
    c = net.add_host("client", forwarding=True)
    px, o = net.add_host("proxy"), net.add_host("origin")
    net.connect(c, f"{CLIENT}/24", px, f"{PROXY_C}/24")
    net.connect(px, f"{PROXY_S}/24", o, f"{ORIGIN}/24")
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)
    c2 = second_client(net, c, px)
    records = Records()
    access = logging.getLogger(f"tests.httpproxy.abuse.{id(records)}")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(records)

    async def main(driver) -> Any:
        loop = asyncio.get_running_loop()

        def clock() -> float:
            return EPOCH + loop.time()

        origin = Origin(clock)
        origin_api = driver.tcp(o)
        await origin_api.start_server(origin.serve, ORIGIN, HTTP)
        proxy_api = driver.tcp(px)
        proxy = HttpProxy(proxy_api, mode="copy", policy=policy, log=access, cache=None,
                          clock=clock, **proxy_kw)
        await proxy.start(PROXY_C, PROXY_PORT)
        world = World(driver.tcp(c), proxy, proxy_api, origin, records)
        world.origin_api = origin_api   # type: ignore[attr-defined]  # a server-side host
        return await body(world, driver.tcp(c2))

    try:
        return run(main, net)
    finally:
        access.removeHandler(records)


def basic(user: str, password: str) -> list[tuple[str, str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Proxy-Authorization", f"Basic {token}")]


async def connect(api) -> harness.BufferedStream:
    return harness.BufferedStream(*await api.open_connection(PROXY_C, PROXY_PORT))


def test_repeated_auth_failures_back_off_per_client_address(caplog) -> None:
    policy = HttpPolicy(users={"alice": "pw"}, allow_clients=ALL_CLIENTS)

    async def body(w: World, client2):
        async def status(fields, api=None) -> int:
            conn = await connect(api or w.client)
            r, _b = await fetch(conn, origin_url("/fresh"), fields=fields)
            conn.writer.close()
            return r.status

        assert await status([]) == 407            # no credentials: a challenge, not a guess
        for _ in range(3):
            assert await status(basic("alice", "guess")) == 407
        assert await status(basic("alice", "pw")) == 429     # right password, too soon
        assert await status(basic("alice", "pw"), client2) == 200
        assert w.proxy.counters["auth_failed"] == 3
        assert w.proxy.counters["auth_throttled"] == 1
        t0 = w.now
        await w.until(lambda: w.now - t0 >= 1.0)
        assert await status(basic("alice", "pw")) == 200
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                    and "authentication failed" in r.getMessage()]
        assert len(warnings) == 3 and all(CLIENT in m and CLIENT2 not in m for m in warnings)
        throttled = [e for e in w.log.entries if e.status == 429]
        assert len(throttled) == 1 and throttled[0].code == "TCP_DENIED"

    simulate2(body, policy)


async def ended_at_once(w: World, conn) -> bytes | None:
    """What the proxy sent before ending the connection, if it ended within a second."""
    t0 = w.now
    out = bytearray()
    try:
        while data := await conn.read_some():
            out += data
    except ConnectionError:
        pass
    return bytes(out) if w.now - t0 < 1.0 else None


def test_one_address_in_many_handshakes_does_not_block_another() -> None:
    policy = HttpPolicy(max_connections=16, max_per_client=16, max_handshakes_per_client=8,
                        handshake_timeout=50.0, allow_clients=ALL_CLIENTS)

    async def body(w: World, client2):
        conns = []
        for _ in range(20):
            conn = await connect(w.client)
            conn.writer.write(b"G")               # a request head that never ends
            conns.append(conn)
        assert await w.until(lambda: w.proxy.counters["accepted"] == 20)
        assert w.proxy.active == 8 and w.proxy.counters["handshake_limit"] == 12
        for conn in conns[8:]:
            # Ended at once: a 503, or only a reset when the close found the client's
            # unread byte (RFC 9293 §3.10.4: a close with data unread may reset).
            got = await ended_at_once(w, conn)
            assert got is not None and (got == b"" or got.startswith(b"HTTP/1.1 503 "))
        r, _b = await fetch(await connect(client2), origin_url("/fresh"))
        assert r.status == 200
        for conn in conns:
            conn.writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and not w.proxy.slots.connections)

    simulate2(body, policy)


def test_idle_keep_alives_are_closed_first_under_slot_pressure() -> None:
    # One client holds every slot with idle keep-alive connections: a new client's
    # connection closes the oldest idle one (FIN) instead of being refused.
    policy = HttpPolicy(max_connections=4, max_per_client=4, keepalive_timeout=300.0,
                        allow_clients=ALL_CLIENTS)

    async def body(w: World, client2):
        idle = []
        for _ in range(4):
            conn = await connect(w.client)
            r, _b = await fetch(conn, origin_url("/fresh"))
            assert r.status == 200 and r.headers.get("connection") != "close"
            idle.append(conn)
        t0 = w.now
        r, _b = await fetch(await connect(client2), origin_url("/fresh"))
        assert r.status == 200 and w.now - t0 < 5.0
        assert w.proxy.counters["idle_closed"] == 1 and w.proxy.counters["over_limit"] == 0
        assert await ended_at_once(w, idle[0]) == b""           # the oldest, closed cleanly
        r, _b = await fetch(idle[1], origin_url("/fresh"))       # the others still work
        assert r.status == 200

    simulate2(body, policy)


def test_connections_per_client_address_are_bounded() -> None:
    policy = HttpPolicy(max_per_client=2, allow_clients=ALL_CLIENTS)

    async def body(w: World, client2):
        busy = []
        for _ in range(2):
            conn = await connect(w.client)
            r, _b = await fetch(conn, origin_url("/fresh"))
            conn.writer.write(b"GET http://198.19.0.1/fresh HTTP/1.1\r\n")  # mid-request
            busy.append(conn)
        got = await ended_at_once(w, await connect(w.client))
        assert got is not None and got.startswith(b"HTTP/1.1 503 ")
        assert w.proxy.counters["per_client_limit"] == 1
        r, _b = await fetch(await connect(client2), origin_url("/fresh"))
        assert r.status == 200

    simulate2(body, policy)


def test_server_side_hosts_cannot_use_the_proxy() -> None:
    async def body(w: World, client2):
        try:
            await w.origin_api.open_connection(PROXY_C, PROXY_PORT)
            refused = False
        except ConnectionRefusedError:
            refused = True
        assert refused and w.proxy_api.tcp.counters["listen_wrong_iface"] == 1
        r, _b = await fetch(await connect(w.client), origin_url("/fresh"))
        assert r.status == 200

    simulate2(body, HttpPolicy(allow_clients=(ipaddress.ip_network("0.0.0.0/0"),)))


def test_clients_default_to_the_listening_interfaces_subnet() -> None:
    async def body(w: World, client2):
        assert w.proxy.policy.allow_clients == (ipaddress.ip_network("198.18.0.0/24"),)
        r, _b = await fetch(await connect(client2), origin_url("/fresh"))   # 198.18.1.1
        assert r.status == 403

    simulate2(body, HttpPolicy())


def test_drain_closes_idle_keep_alives_and_keeps_nothing_alive() -> None:
    # At a stop (TapStack.drain_hooks): an idle kept-alive connection is closed at once
    # (FIN), and the response of an exchange in progress says Connection: close.
    policy = HttpPolicy(keepalive_timeout=300.0, allow_clients=ALL_CLIENTS)

    async def body(w: World, client2):
        idle = await connect(w.client)
        r, _b = await fetch(idle, origin_url("/fresh"))
        assert r.status == 200 and r.headers.get("connection") != "close"
        busy = await connect(client2)
        w.proxy.drain()
        assert await ended_at_once(w, idle) == b""
        r, _b = await fetch(busy, origin_url("/fresh"))
        assert r.status == 200 and r.headers.get("connection") == "close"
        assert await ended_at_once(w, busy) == b""

    simulate2(body, policy)
