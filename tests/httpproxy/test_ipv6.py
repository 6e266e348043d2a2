"""The HTTP proxy over IPv6 on the simulated network: IPv6 clients and origins,
IPv6 literals and names with AAAA records, and which exchanges are spliced (only
IPv4 to IPv4: the splice does not relay IPv6 yet, apps/httpproxy/dial.py)."""

from __future__ import annotations

import pytest

from apps.httpproxy import dial
from apps.httpproxy.policy import HttpPolicy
from tests.httpproxy.harness import (
    BIG,
    CLIENT6,
    ORIGIN,
    ORIGIN6,
    PROXY6_C,
    TLS,
    World,
    _big,
    fetch,
    simulate,
)

URL6 = f"http://[{ORIGIN6}]"
NAMES = {"both.test": [ORIGIN, ORIGIN6], "six.test": [ORIGIN6], "four.test": [ORIGIN]}


async def _resolve(name: str, kinds: tuple[str, ...] = ("A",)) -> list[str]:
    """A resolver with A and AAAA records (IPv4 first, as the stack's)."""
    return [a for a in NAMES[name] if ("AAAA" if ":" in a else "A") in kinds]


def codes(w: World) -> list[str]:
    return [f"{e.code}/{e.status}" for e in w.log.entries]


def copied(w: World) -> bool:
    """Nothing was spliced, either way or one way."""
    return (w.proxy.counters["spliced"] == 0 and w.proxy.counters["spliced_bodies"] == 0
            and w.proxy.splice.splicer.counters["splices"] == 0)


@pytest.mark.parametrize("proxy, close", [("198.18.0.2", False), ("198.18.0.2", True),
                                          (PROXY6_C, False), (PROXY6_C, True)])
def test_ipv6_origin_is_fetched_and_copied(proxy: str, close: bool) -> None:
    """v4 and v6 clients to a v6 literal, kept alive (one-way splice candidate) or
    the last response (splice candidate): the body intact, copied."""
    async def body(w: World):
        conn = await w.connect(proxy)
        fields = [("Connection", "close")] if close else []
        r, b = await fetch(conn, f"{URL6}/big", fields=fields)
        assert r.status == 200 and b == _big()
        assert copied(w)
        method, target, head = w.origin.requests[0]
        assert (target, head["host"]) == ("/big", f"[{ORIGIN6}]")
        assert await w.until(lambda: bool(w.log.entries))
        e = w.log.entries[0]
        assert (e.code, e.status, e.peer, e.url) == ("TCP_MISS", 200, ORIGIN6, f"{URL6}/big")
        assert e.client == (CLIENT6 if ":" in proxy else "198.18.0.1")
        assert f"{URL6}/big" in e.line() and f"HIER_DIRECT/{ORIGIN6}" in e.line()
        conn.writer.close()

    simulate(body, mode="splice", ipv6=True)


def test_ipv6_client_to_ipv4_origin_is_copied() -> None:
    async def body(w: World):
        conn = await w.connect(PROXY6_C)
        r, b = await fetch(conn, f"http://{ORIGIN}/big")
        assert r.status == 200 and len(b) == BIG
        assert copied(w) and w.log.entries[0].client == CLIENT6
        conn.writer.close()

    simulate(body, mode="splice", ipv6=True)


def test_ipv4_client_to_ipv4_origin_stays_spliced() -> None:
    async def body(w: World):
        conn = await w.connect()
        r, b = await fetch(conn, f"http://{ORIGIN}/big-paced")     # one way
        assert r.status == 200 and b == _big()
        r, b = await fetch(conn, f"http://{ORIGIN}/big-paced", fields=[
            ("Cache-Control", "no-cache"), ("Connection", "close")])   # both ways
        assert b == _big() and w.proxy.splice.splicer.counters["splices"] == 1
        assert w.proxy.counters["spliced_bodies"] == 1
        assert w.proxy.splice.splicer.counters["copied_payload_bytes"] == 0

    simulate(body, mode="splice", ipv6=True)


def test_ipv6_origin_is_cached() -> None:
    async def body(w: World):
        conn = await w.connect(PROXY6_C)
        for _ in range(2):
            r, b = await fetch(conn, f"{URL6}/fresh")
            assert r.status == 200 and b.startswith(b"/fresh v1")
        # The same resource by the address written out in full: the same cache key.
        r, b = await fetch(conn, "http://[2001:2:0:2:0:0:0:1]:80/fresh")
        assert r.status == 200
        assert w.origin.hits["/fresh"] == 1
        assert codes(w) == ["TCP_MISS/200", "TCP_MEM_HIT/200", "TCP_MEM_HIT/200"]
        conn.writer.close()

    simulate(body, mode="copy", ipv6=True)


@pytest.mark.parametrize("proxy", ["198.18.0.2", PROXY6_C])
def test_connect_to_an_ipv6_literal_is_tunnelled_by_copying(proxy: str) -> None:
    async def body(w: World):
        conn = await w.connect(proxy)
        conn.writer.write(f"CONNECT [{ORIGIN6}]:{TLS} HTTP/1.1\r\n"
                          f"Host: [{ORIGIN6}]:{TLS}\r\n\r\n".encode())
        head = await conn.read_head(lambda buf: (None if b"\r\n\r\n" not in buf else
                                                 (bytes(buf), buf.index(b"\r\n\r\n") + 4)))
        assert head.startswith(b"HTTP/1.1 200 ")
        payload = bytes(range(256)) * 800
        conn.writer.write(payload)
        conn.writer.write_eof()
        got = bytearray(conn.buf)
        while data := await conn.reader.read(65536):
            got += data
        assert bytes(got) == payload
        assert await w.until(lambda: bool(w.log.entries))
        e = w.log.entries[0]
        assert (e.code, e.status, e.url, e.peer) == ("TCP_TUNNEL", 200,
                                                     f"[{ORIGIN6}]:{TLS}", ORIGIN6)
        assert copied(w)

    simulate(body, mode="splice", ipv6=True)


@pytest.mark.parametrize("proxy, peer, spliced", [("198.18.0.2", ORIGIN, 1),
                                                  (PROXY6_C, ORIGIN6, 0)])
def test_a_name_with_both_families_prefers_the_clients(proxy: str, peer: str,
                                                       spliced: int) -> None:
    """RFC 8305 §4 with the client's family first: an IPv4 client reaches the IPv4
    address (and is spliced), an IPv6 client the IPv6 one."""
    async def body(w: World):
        conn = await w.connect(proxy)
        r, b = await fetch(conn, "http://both.test/big", fields=[("Connection", "close")])
        assert r.status == 200 and b == _big()
        conn.writer.close()
        assert await w.until(lambda: bool(w.log.entries))
        assert w.log.entries[0].peer == peer
        assert w.proxy.splice.splicer.counters["splices"] == spliced

    simulate(body, mode="splice", ipv6=True, resolve=_resolve)


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_a_name_with_aaaa_only_is_reached(mode: str) -> None:
    async def body(w: World):
        conn = await w.connect()
        r, b = await fetch(conn, "http://six.test/fresh", fields=[("Connection", "close")])
        assert r.status == 200 and b.startswith(b"/fresh v1")
        assert w.origin.requests[0][2]["host"] == "six.test"
        conn.writer.close()
        assert await w.until(lambda: bool(w.log.entries))
        assert w.log.entries[0].peer == ORIGIN6

    simulate(body, mode=mode, ipv6=True, resolve=_resolve)


def test_without_ipv6_a_name_with_aaaa_only_is_502() -> None:
    async def body(w: World):
        assert not w.proxy.ipv6      # the stack speaks IPv4 only: A records only
        conn = await w.connect()
        r, b = await fetch(conn, "http://six.test/fresh")
        assert r.status == 502 and b"no IPv4 address" in b

    simulate(body, mode="copy", resolve=_resolve)


def test_default_clients_are_both_families_of_the_listening_side() -> None:
    async def body(w: World):
        allowed = {str(n) for n in w.proxy.policy.allow_clients}
        assert allowed == {"198.18.0.0/24", "2001:2:0:1::/64"}
        assert not w.proxy.policy.client_allowed(ORIGIN6)

    simulate(body, mode="copy", ipv6=True)


def test_ipv6_destinations_obey_allow_dests() -> None:
    policy = HttpPolicy(allow_dests=(dial_net("198.19.0.0/24"),))

    async def body(w: World):
        conn = await w.connect(PROXY6_C)
        r, _b = await fetch(conn, f"{URL6}/fresh")
        assert r.status == 403 and codes(w) == ["TCP_DENIED/403"]
        assert w.origin.requests == []

    simulate(body, mode="copy", ipv6=True, policy=policy)


def dial_net(text: str):
    import ipaddress
    return ipaddress.ip_network(text)


def test_splice_family_is_ipv4_only() -> None:
    assert dial.spliceable_pair("198.18.0.1", "198.19.0.1")
    assert not dial.spliceable_pair("198.18.0.1", ORIGIN6)
    assert not dial.spliceable_pair(CLIENT6, "198.19.0.1")
    assert not dial.spliceable_pair(CLIENT6, ORIGIN6)

