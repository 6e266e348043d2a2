"""CNAME chains within one answer and across queries, and their bounds."""

from __future__ import annotations

import asyncio

import dns.rcode
import pytest

from stack.dns import NameNotFound, Resolver, ResolverConfig, ResolverFailure
from tests.dns.fakenet import S1, FakeNet, Send, qname, reply, run


def zone(records: dict[str, list[str]], rcodes: dict[str, int] | None = None):
    """A server answering each name with its records (zone-file lines)."""
    def handle(q):
        name = qname(q)
        code = (rcodes or {}).get(name, dns.rcode.NOERROR)
        return [Send(reply(q, *records.get(name, []), rcode=code,
                           soa=(60, 60) if code == dns.rcode.NXDOMAIN else None))]
    return handle


def test_chain_in_one_answer_is_followed_and_cached_for_its_smallest_ttl():
    net = FakeNet()
    net.udp[S1] = zone({"www.example.": [
        "www.example. 300 IN CNAME edge.example.",
        "edge.example. 40 IN CNAME host.cdn.example.",
        "other.example. 300 IN A 198.18.6.6",
        "host.cdn.example. 120 IN A 198.18.4.4"]})
    res = Resolver(net, [S1])

    async def main():
        assert await res.resolve("www.example") == ["198.18.4.4"]
        await asyncio.sleep(39.75)
        assert await res.resolve("www.example") == ["198.18.4.4"]
        assert len(net.sent) == 1
        await asyncio.sleep(0.25)
        await res.resolve("www.example")
        assert len(net.sent) == 2
    run(main)


def test_chain_that_stops_at_a_cname_is_asked_for_its_target():
    net = FakeNet()
    net.udp[S1] = zone({
        "www.example.": ["www.example. 300 IN CNAME web.other.example."],
        "web.other.example.": ["web.other.example. 300 IN A 198.18.4.5"]})
    res = Resolver(net, [S1])
    assert run(lambda: res.resolve("www.example")) == ["198.18.4.5"]
    assert [qname(s.query) for s in net.sent] == ["www.example.", "web.other.example."]
    assert run(lambda: res.resolve("www.example")) == ["198.18.4.5"]
    assert len(net.sent) == 2  # both links of the chain came from the cache


def test_cname_to_a_missing_name_is_name_not_found():
    net = FakeNet()
    net.udp[S1] = zone({"www.example.": ["www.example. 300 IN CNAME gone.example."]},
                       {"gone.example.": dns.rcode.NXDOMAIN})
    res = Resolver(net, [S1])
    with pytest.raises(NameNotFound, match="gone.example") as info:
        run(lambda: res.resolve("www.example"))
    assert info.value.nxdomain and info.value.host == "www.example"


def test_cname_loop_in_one_answer_is_resolver_failure():
    net = FakeNet()
    net.udp[S1] = zone({"a.example.": ["a.example. 300 IN CNAME b.example.",
                                       "b.example. 300 IN CNAME a.example."]})
    res = Resolver(net, [S1])
    with pytest.raises(ResolverFailure, match="loop"):
        run(lambda: res.resolve("a.example"))
    assert len(net.sent) == 1


def test_cname_loop_across_queries_is_resolver_failure():
    net = FakeNet()
    net.udp[S1] = zone({"a.example.": ["a.example. 300 IN CNAME b.example."],
                        "b.example.": ["b.example. 300 IN CNAME a.example."]})
    res = Resolver(net, [S1])
    with pytest.raises(ResolverFailure, match="loop"):
        run(lambda: res.resolve("a.example"))
    assert [qname(s.query) for s in net.sent] == ["a.example.", "b.example."]


def test_chain_longer_than_max_cname_is_resolver_failure():
    net = FakeNet()
    links = {f"n{i}.example.": [f"n{i}.example. 300 IN CNAME n{i + 1}.example."]
             for i in range(10)}
    links["n10.example."] = ["n10.example. 300 IN A 198.18.4.6"]
    net.udp[S1] = zone(links)
    res = Resolver(net, [S1], config=ResolverConfig(max_cname=3))
    with pytest.raises(ResolverFailure, match="longer than 3"):
        run(lambda: res.resolve("n0.example"))
    assert len(net.sent) == 4
    ok = Resolver(net, [S1], config=ResolverConfig(max_cname=10))
    assert run(lambda: ok.resolve("n0.example")) == ["198.18.4.6"]


def test_long_chain_in_one_answer_is_bounded():
    net = FakeNet()
    chain = [f"n{i}.example. 300 IN CNAME n{i + 1}.example." for i in range(5)]
    net.udp[S1] = zone({"n0.example.": [*chain, "n5.example. 300 IN A 198.18.4.7"]})
    assert run(lambda: Resolver(net, [S1]).resolve("n0.example")) == ["198.18.4.7"]
    res = Resolver(net, [S1], config=ResolverConfig(max_cname=4))
    with pytest.raises(ResolverFailure):
        run(lambda: res.resolve("n0.example"))
