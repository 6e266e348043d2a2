"""RFC 5452: datagrams that are not the answer are counted and ignored, and the real
answer still wins at its own time."""

from __future__ import annotations

import asyncio
import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rrset
import pytest

from stack.dns import Resolver, ResolverConfig, ResolverTimeout
from tests.dns.fakenet import S1, FakeNet, Send, reply, run

GOOD = "198.18.1.1"
EVIL = "198.18.6.6"


def forged(q: dns.message.Message, *, name: str | None = None, rdtype: str | None = None,
           rdclass: str = "IN", qid: int | None = None) -> dns.message.Message:
    """A response carrying EVIL, with the question or ID altered as asked."""
    qn = name or q.question[0].name.to_text()
    qt = rdtype or "A"
    fake_q = dns.message.make_query(qn, qt, rdclass, id=q.id if qid is None else qid)
    resp = dns.message.make_response(fake_q)
    resp.answer.append(dns.rrset.from_text(qn, 300, "IN", qt,
                                           EVIL if qt == "A" else "2001:2::66"))
    return resp


def _wire(msg: dns.message.Message) -> bytes:
    return msg.to_wire()


def _not_response(q):
    return dns.message.make_query(q.question[0].name, "A", id=q.id).to_wire()


def _opcode(q):
    resp = forged(q)
    resp.set_opcode(dns.opcode.NOTIFY)
    return resp.to_wire()


def _compression_loop(q):
    # Built by hand on purpose: the question name is a pointer to itself (offset 12).
    header = struct.pack("!HHHHHH", q.id, 0x8180, 1, 0, 0, 0)
    return header + b"\xc0\x0c" + struct.pack("!HH", 1, 1)


def _oversized(q):
    resp = forged(q)
    resp.answer.append(dns.rrset.from_text(
        q.question[0].name, 300, "IN", "A", *[f"198.18.5.{i}" for i in range(1, 120)]))
    return resp.to_wire()


BAD = {
    "id": lambda q: _wire(forged(q, qid=(q.id + 1) % 65536)),
    "question": lambda q: _wire(forged(q, name="evil.example.")),
    "question_type": lambda q: _wire(forged(q, rdtype="AAAA")),
    "question_class": lambda q: _wire(forged(q, rdclass="CH")),
    "not_response": _not_response,
    "opcode": _opcode,
    "short": lambda q: struct.pack("!H", q.id) + b"\x81\x80",
    "malformed": lambda q: struct.pack("!HHHHHH", q.id, 0x8180, 1, 0, 0, 0) + b"\x05www",
    "compression": _compression_loop,
    "trailing": lambda q: _wire(forged(q)) + b"\x00\x00junk",
    "oversized": _oversized,
}
REASON = {"question_type": "question", "question_class": "question"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_datagram_is_counted_and_the_real_answer_wins(kind):
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(BAD[kind](q), 0.125),
                             Send(reply(q, f"{q.question[0].name} 30 IN A {GOOD}"), 0.25)]
    res = Resolver(net, [S1])

    async def main():
        t0 = asyncio.get_running_loop().time()
        got = await res.resolve("www.example")
        assert asyncio.get_running_loop().time() == t0 + 0.25
        return got
    assert run(main) == [GOOD]
    assert res.counters[f"drop.{REASON.get(kind, kind)}"] == 1
    assert sum(v for k, v in res.counters.items() if k.startswith("drop.")) == 1
    assert run(lambda: res.resolve("www.example")) == [GOOD]  # nothing evil was cached


@pytest.mark.parametrize("src,reason", [((S1[0], 5353), "port"), (("198.18.0.66", 53), "address")])
def test_a_matching_answer_from_elsewhere_is_ignored(src, reason):
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(forged(q).to_wire(), 0.125, src=src),
                             Send(reply(q, f"{q.question[0].name} 30 IN A {GOOD}"), 0.25)]
    res = Resolver(net, [S1])
    assert run(lambda: res.resolve("www.example")) == [GOOD]
    assert res.counters[f"drop.{reason}"] == 1


def test_question_name_is_matched_without_regard_to_case():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(reply(dns.message.make_query("WwW.ExAmPlE.", "A", id=q.id),
                                        f"WWW.EXAMPLE. 30 IN A {GOOD}"))]
    res = Resolver(net, [S1])
    assert run(lambda: res.resolve("www.example")) == [GOOD]


def test_only_forgeries_never_end_the_lookup_early():
    net = FakeNet()
    net.udp[S1] = lambda q: [Send(BAD[k](q), 0.0625 * (i + 1)) for i, k in enumerate(sorted(BAD))]
    res = Resolver(net, [S1], config=ResolverConfig(timeout=1.0, attempts=2, deadline=5.0))

    async def main():
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ResolverTimeout):
            await res.resolve("www.example")
        assert asyncio.get_running_loop().time() == t0 + 2.0
    run(main)
    assert res.counters["timeout"] == 2
    assert sum(v for k, v in res.counters.items() if k.startswith("drop.")) == 2 * len(BAD)


def test_tc_answer_with_the_wrong_id_does_not_trigger_tcp():
    net = FakeNet()

    def handle(q):
        bad = forged(q, qid=(q.id + 7) % 65536)
        bad.flags |= dns.flags.TC
        return [Send(bad.to_wire(), 0.125),
                Send(reply(q, f"{q.question[0].name} 30 IN A {GOOD}"), 0.25)]
    net.udp[S1] = handle
    res = Resolver(net, [S1])
    assert run(lambda: res.resolve("www.example")) == [GOOD]
    assert res.counters["drop.id"] == 1 and res.counters["tcp_fallback"] == 0
