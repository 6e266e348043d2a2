"""Hosts mapping, literals, names, answers and the cache, on virtual time."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rcode
import pytest

from stack.dns import NameNotFound, Resolver, ResolverConfig
from tests.dns.fakenet import S1, S2, FakeNet, Send, qname, qtype, reply, run


def a_server(addr: str = "198.18.1.1", ttl: int = 30, delay: float = 0.125):
    def handle(query: dns.message.Message) -> list:
        return [Send(reply(query, f"{qname(query)} {ttl} IN A {addr}"), delay)]
    return handle


def test_hosts_mapping_first_case_and_trailing_dot_ignored():
    net = FakeNet()
    net.udp[S1] = a_server()
    res = Resolver(net, [S1], hosts={"Printer.Example.": "198.18.7.7", "v6.example": "2001:2::7"})

    async def main():
        assert await res.resolve("printer.EXAMPLE") == ["198.18.7.7"]
        assert await res.resolve("PRINTER.example.") == ["198.18.7.7"]
        assert await res.resolve("v6.example", kinds=("A", "AAAA")) == ["2001:2::7"]
    run(main)
    assert net.sent == []


def test_hosts_entry_of_the_other_family_falls_through_to_dns():
    net = FakeNet()
    net.udp[S1] = a_server("198.18.1.9")
    res = Resolver(net, [S1], hosts={"v6.example": "2001:2::7"})
    assert run(lambda: res.resolve("v6.example")) == ["198.18.1.9"]
    assert len(net.sent) == 1


@pytest.mark.parametrize("literal,expected", [
    ("198.18.0.9", "198.18.0.9"), ("2001:2:0::1", "2001:2::1")])
def test_ip_literal_resolves_to_itself(literal, expected):
    net = FakeNet()
    res = Resolver(net, [S1])
    assert run(lambda: res.resolve(literal)) == [expected]
    assert net.sent == []


@pytest.mark.parametrize("name,why", [
    ("a" * 64 + ".example", "63"), (".".join(["abcdefghi"] * 26), "255"),
    ("", "empty"), (".", "empty"), ("a..example", "empty label"), ("bad name.example", "space")])
def test_invalid_names_are_name_not_found_without_a_query(name, why):
    net = FakeNet()
    res = Resolver(net, [S1])
    with pytest.raises(NameNotFound) as info:
        run(lambda: res.resolve(name))
    assert info.value.host == name
    assert why.split()[0] in str(info.value) or why in str(info.value).lower()
    assert net.sent == []


def test_no_servers_and_no_hosts_entry_is_name_not_found():
    res = Resolver(FakeNet(), [])
    with pytest.raises(NameNotFound, match="no DNS server"):
        run(lambda: res.resolve("www.example"))


def test_bad_kinds_and_servers_are_value_errors():
    res = Resolver(FakeNet(), [S1])
    with pytest.raises(ValueError):
        run(lambda: res.resolve("www.example", kinds=("MX",)))
    with pytest.raises(ValueError):
        run(lambda: res.resolve("www.example", kinds=()))
    with pytest.raises(ValueError):
        Resolver(FakeNet(), [("not-an-ip", 53)])
    with pytest.raises(ValueError):
        res.servers = [("198.18.0.1", 0)]


def test_answer_then_cache_hit_until_exactly_ttl():
    net = FakeNet()
    net.udp[S1] = a_server(ttl=30, delay=0.25)
    res = Resolver(net, [S1])

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await res.resolve("www.example") == ["198.18.1.1"]
        assert loop.time() == t0 + 0.25
        await asyncio.sleep(29.75)
        assert await res.resolve("WWW.example.") == ["198.18.1.1"]
        assert len(net.sent) == 1
        await asyncio.sleep(0.25)  # now exactly 30 s after the answer arrived
        assert await res.resolve("www.example") == ["198.18.1.1"]
        assert len(net.sent) == 2
    run(main)
    assert res.counters["cache_hit"] == 1
    assert res.counters["cache_miss"] == 2
    q = net.sent[0].query
    assert qname(q) == "www.example." and qtype(q) == "A"
    assert q.edns == 0 and q.payload == 1232


def test_ttl_ceiling_and_zero_ttl():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(reply(q, f"{qname(q)} {0 if 'zero' in qname(q) else 86400}"
                                            " IN A 198.18.1.2"))]
    res = Resolver(net, [S1], config=ResolverConfig(max_ttl=100.0))

    async def main():
        await res.resolve("long.example")
        await asyncio.sleep(99.75)
        await res.resolve("long.example")
        assert len(net.sent) == 1
        await asyncio.sleep(0.25)  # 100 s after the answer: the ceiling
        await res.resolve("long.example")
        assert len(net.sent) == 2
        await res.resolve("zero.example")
        await res.resolve("zero.example")
        assert len(net.sent) == 4
    run(main)


def _negative(rcode: int, soa: tuple[int, int] | None):
    return lambda q: [Send(reply(q, rcode=rcode, soa=soa))]


def test_nxdomain_is_cached_for_min_of_soa_ttl_and_minimum():
    net = FakeNet()
    net.udp[S1] = _negative(dns.rcode.NXDOMAIN, (600, 60))
    res = Resolver(net, [S1])

    async def main():
        for _ in range(2):
            with pytest.raises(NameNotFound, match="NXDOMAIN") as info:
                await res.resolve("nope.example")
            assert info.value.nxdomain
        assert len(net.sent) == 1
        await asyncio.sleep(59.75)
        with pytest.raises(NameNotFound):
            await res.resolve("nope.example")
        assert len(net.sent) == 1
        await asyncio.sleep(0.25)  # 60 s after the answer
        with pytest.raises(NameNotFound):
            await res.resolve("nope.example")
        assert len(net.sent) == 2
    run(main)
    assert res.counters["negative_hit"] == 2
    assert res.counters["nxdomain"] == 2


@pytest.mark.parametrize("soa,cap,expect", [((10, 3000), 300.0, 10), ((3000, 3000), 300.0, 300)])
def test_negative_ttl_uses_the_soa_ttl_and_the_cap(soa, cap, expect):
    net = FakeNet()
    net.udp[S1] = _negative(dns.rcode.NXDOMAIN, soa)
    res = Resolver(net, [S1], config=ResolverConfig(max_negative_ttl=cap))

    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(NameNotFound):
            await res.resolve("nope.example")
        answered = loop.time()
        await asyncio.sleep(expect - 0.25)
        with pytest.raises(NameNotFound):
            await res.resolve("nope.example")
        assert len(net.sent) == 1
        await asyncio.sleep(0.25)
        assert loop.time() == answered + expect
        with pytest.raises(NameNotFound):
            await res.resolve("nope.example")
        assert len(net.sent) == 2
    run(main)


def test_nodata_is_name_not_found_and_cached():
    net = FakeNet()
    net.udp[S1] = _negative(dns.rcode.NOERROR, (120, 120))
    res = Resolver(net, [S1])

    async def main():
        for _ in range(2):
            with pytest.raises(NameNotFound, match="NODATA") as info:
                await res.resolve("empty.example")
            assert not info.value.nxdomain
    run(main)
    assert len(net.sent) == 1
    assert res.counters["nodata"] == 1


def test_negative_answer_without_soa_is_not_cached():
    net = FakeNet()
    net.udp[S1] = _negative(dns.rcode.NXDOMAIN, None)
    res = Resolver(net, [S1])

    async def main():
        for _ in range(2):
            with pytest.raises(NameNotFound):
                await res.resolve("nope.example")
    run(main)
    assert len(net.sent) == 2


def test_a_and_aaaa_in_parallel_ipv4_first():
    net = FakeNet()

    def handle(q):
        if qtype(q) == "AAAA":
            return [Send(reply(q, f"{qname(q)} 30 IN AAAA 2001:2::1"), 0.125)]
        return [Send(reply(q, f"{qname(q)} 30 IN A 198.18.1.1"), 0.25)]
    net.udp[S1] = handle
    res = Resolver(net, [S1])

    async def main():
        t0 = asyncio.get_running_loop().time()
        got = await res.resolve("dual.example", kinds=("AAAA", "A"))
        assert asyncio.get_running_loop().time() == t0 + 0.25
        return got
    assert run(main) == ["198.18.1.1", "2001:2::1"]
    assert [qtype(s.query) for s in net.sent] == ["AAAA", "A"] or \
        [qtype(s.query) for s in net.sent] == ["A", "AAAA"]
    assert net.sent[0].at == net.sent[1].at


def test_nodata_for_one_kind_with_data_for_the_other_is_success():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(reply(q, soa=(60, 60)) if qtype(q) == "AAAA"
                                  else reply(q, f"{qname(q)} 30 IN A 198.18.1.1"))]
    res = Resolver(net, [S1])
    assert run(lambda: res.resolve("v4only.example", kinds=("A", "AAAA"))) == ["198.18.1.1"]


def test_both_kinds_negative_is_name_not_found():
    net = FakeNet()
    net.udp[S1] = _negative(dns.rcode.NXDOMAIN, (60, 60))
    res = Resolver(net, [S1])
    with pytest.raises(NameNotFound) as info:
        run(lambda: res.resolve("nope.example", kinds=("A", "AAAA")))
    assert info.value.nxdomain and info.value.host == "nope.example"


def test_large_rrset_is_cut_to_64_addresses():
    net = FakeNet()
    records = [f"many.example. 30 IN A 198.18.{i // 250}.{i % 250 + 1}" for i in range(100)]
    net.udp[S1] = lambda q: [Send(reply(q, *records))]
    res = Resolver(net, [S1], config=ResolverConfig(edns_payload=4096))
    got = run(lambda: res.resolve("many.example"))
    assert len(got) == 64
    assert got[0] == "198.18.0.1"


def test_cache_is_lru_bounded():
    net = FakeNet()
    net.udp[S1] = a_server()
    res = Resolver(net, [S1], config=ResolverConfig(cache_size=2))

    async def main():
        for name in ("a.example", "b.example", "a.example", "c.example", "a.example",
                     "b.example"):
            await res.resolve(name)
    run(main)
    # a, b, (a hit), c evicts b, (a hit), b again
    assert [qname(s.query) for s in net.sent] == ["a.example.", "b.example.", "c.example.",
                                                 "b.example."]
    assert res.stats()["cache_entries"] == 2


def test_servers_replaced_while_a_lookup_is_in_flight():
    net = FakeNet()
    net.udp[S1] = a_server("198.18.1.1", ttl=0, delay=0.5)
    net.udp[S2] = a_server("198.18.2.2", ttl=0, delay=0.5)
    res = Resolver(net, [S1])

    async def main():
        first = asyncio.ensure_future(res.resolve("www.example"))
        await asyncio.sleep(0.25)
        res.servers = [S2]
        assert await first == ["198.18.1.1"]
        assert await res.resolve("www.example") == ["198.18.2.2"]
    run(main)
    assert [s.dst for s in net.sent] == [S1, S2]
    assert res.stats()["servers"] == [S2]
