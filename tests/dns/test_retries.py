"""Per-try timeouts, the next server, rounds, the overall deadline and TCP fallback,
with exact times on the virtual clock."""

from __future__ import annotations

import asyncio

import dns.rcode
import pytest

from stack.dns import Resolver, ResolverConfig, ResolverFailure, ResolverTimeout
from tests.dns.fakenet import S1, S2, FakeNet, Send, Unreachable, reply, run

S3 = ("198.18.0.55", 53)


def good(addr: str = "198.18.1.1", delay: float = 0.125):
    return lambda q: [Send(reply(q, f"{q.question[0].name} 30 IN A {addr}"), delay)]


def rcode(code: int):
    return lambda q: [Send(reply(q, rcode=code))]


def silent(q):
    return []


async def timed(res: Resolver, name: str = "www.example"):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        return await res.resolve(name), loop.time() - t0
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised and when
        return exc, loop.time() - t0


def test_timeout_on_server_1_then_server_2_answers():
    net = FakeNet()
    net.udp[S1], net.udp[S2] = silent, good(delay=0.125)
    res = Resolver(net, [S1, S2])
    got, took = run(lambda: timed(res))
    assert got == ["198.18.1.1"]
    assert took == 1.0 + 0.125
    assert [(s.dst, s.at - 1000.0) for s in net.sent] == [(S1, 0.0), (S2, 1.0)]
    assert res.counters["timeout"] == 1


def test_all_servers_silent_times_out_after_every_round():
    net = FakeNet()
    net.udp[S1], net.udp[S2] = silent, silent
    res = Resolver(net, [S1, S2], config=ResolverConfig(timeout=1.0, attempts=2, deadline=5.0))
    got, took = run(lambda: timed(res))
    assert isinstance(got, ResolverTimeout) and got.host == "www.example"
    assert took == 4.0
    assert [s.dst for s in net.sent] == [S1, S2, S1, S2]


def test_the_deadline_cuts_the_last_try_short():
    net = FakeNet()
    net.udp[S1], net.udp[S2] = silent, good(delay=0.75)
    res = Resolver(net, [S1, S2], config=ResolverConfig(timeout=1.0, attempts=5, deadline=2.5))
    # S1 at 0 (times out at 1), S2 at 1 would answer at 1.75: make S2 silent first.
    net.udp[S2] = silent
    got, took = run(lambda: timed(res))
    assert isinstance(got, ResolverTimeout)
    assert took == 2.5
    assert [s.at - 1000.0 for s in net.sent] == [0.0, 1.0, 2.0]


def test_servfail_everywhere_is_resolver_failure():
    net = FakeNet()
    net.udp[S1], net.udp[S2] = rcode(dns.rcode.SERVFAIL), rcode(dns.rcode.REFUSED)
    res = Resolver(net, [S1, S2])
    got, took = run(lambda: timed(res))
    assert isinstance(got, ResolverFailure)
    assert "SERVFAIL" in str(got) and "REFUSED" in str(got)
    assert took == 4 * 0.125
    assert [s.dst for s in net.sent] == [S1, S2, S1, S2]
    assert res.counters["rcode.SERVFAIL"] == 2 and res.counters["rcode.REFUSED"] == 2


@pytest.mark.parametrize("code", [dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP,
                                  dns.rcode.FORMERR])
def test_a_failing_server_sends_us_to_the_next_at_once(code):
    net = FakeNet()
    net.udp[S1], net.udp[S2] = rcode(code), good()
    res = Resolver(net, [S1, S2])
    got, took = run(lambda: timed(res))
    assert got == ["198.18.1.1"] and took == 0.25


def test_failure_and_timeout_mixed_is_a_timeout():
    net = FakeNet()
    net.udp[S1], net.udp[S2] = rcode(dns.rcode.SERVFAIL), silent
    res = Resolver(net, [S1, S2], config=ResolverConfig(attempts=1))
    got, took = run(lambda: timed(res))
    assert isinstance(got, ResolverTimeout) and took == 1.125


def test_port_unreachable_moves_to_the_next_server_at_once():
    net = FakeNet()
    net.udp[S1] = lambda q: [Unreachable(0.0625)]
    net.udp[S2] = good()
    res = Resolver(net, [S1, S2])
    got, took = run(lambda: timed(res))
    assert got == ["198.18.1.1"] and took == 0.0625 + 0.125
    assert res.counters["unreachable"] == 1


def test_unreachable_everywhere_is_resolver_failure():
    net = FakeNet()
    net.udp[S1] = net.udp[S2] = lambda q: [Unreachable(0.0625)]
    res = Resolver(net, [S1, S2])
    got, took = run(lambda: timed(res))
    assert isinstance(got, ResolverFailure) and "unreachable" in str(got)
    assert took == 4 * 0.0625


def test_truncated_answer_is_asked_again_over_tcp():
    net = FakeNet()
    records = [f"big.example. 30 IN A 198.18.3.{i}" for i in range(1, 101)]
    net.udp[S1] = lambda q: [Send(reply(q, tc=True), 0.125)]
    net.tcp[S1] = lambda q: [Send(reply(q, *records), 0.25)]
    res = Resolver(net, [S1])
    got, took = run(lambda: timed(res, "big.example"))
    assert len(got) == 64 and got[0] == "198.18.3.1"
    assert took == 0.375
    tcp = net.queries("tcp")
    assert len(tcp) == 1 and tcp[0].query.question == net.queries()[0].query.question
    assert res.counters["tcp_fallback"] == 1


def test_tcp_refused_after_truncation_moves_to_the_next_server():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(reply(q, tc=True))]
    net.udp[S2] = good("198.18.2.2")
    res = Resolver(net, [S1, S2])
    got, took = run(lambda: timed(res))
    assert got == ["198.18.2.2"] and took == 0.25


def test_tcp_answers_share_the_deadline():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(reply(q, tc=True), 0.5)]
    net.tcp[S1] = silent
    res = Resolver(net, [S1], config=ResolverConfig(timeout=1.0, attempts=3, deadline=2.0))
    got, took = run(lambda: timed(res))
    assert isinstance(got, ResolverTimeout)
    assert took == 2.0  # UDP 0.5 + TCP 1.0, then UDP 0.5 truncated again, TCP cut at 2.0


def test_tcp_reply_with_the_wrong_id_is_skipped():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(reply(q, tc=True))]

    def tcp(q):
        wrong = reply(q, "www.example. 30 IN A 198.18.6.6")
        wrong = bytes([wrong[0] ^ 0xFF]) + wrong[1:]
        return [Send(wrong, 0.125), Send(reply(q, "www.example. 30 IN A 198.18.1.1"), 0.25)]
    net.tcp[S1] = tcp
    res = Resolver(net, [S1])
    got, _ = run(lambda: timed(res))
    assert got == ["198.18.1.1"] and res.counters["drop.tcp_id"] == 1


def test_endpoints_are_closed_after_each_try():
    net = FakeNet()
    net.udp[S1], net.udp[S2] = silent, good()
    res = Resolver(net, [S1, S2])
    run(lambda: timed(res))
    assert len(net.endpoints) == 2 and net.open_endpoints() == 0
