"""Property: whatever the server's address sends, resolve() raises nothing but a
ResolverError and returns no address that a well-formed matching answer did not carry."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.dns import Resolver, ResolverConfig, ResolverError
from tests.dns.fakenet import S1, FakeNet, Send, reply, run

GOOD = "198.18.1.1"

recipe = st.one_of(
    st.tuples(st.just("raw"), st.binary(max_size=300), st.just(())),
    st.tuples(st.just("id"), st.binary(max_size=300), st.just(())),
    st.tuples(st.just("mutate"), st.just(b""),
              st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1,
                       max_size=6)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=20), st.just(())),
)


def _template(q: dns.message.Message) -> bytes:
    return reply(q, f"{q.question[0].name} 30 IN A 198.18.9.9",
                 f"{q.question[0].name} 30 IN A 198.18.9.10")


def build(kind: str, data: bytes, edits, q: dns.message.Message) -> bytes:
    if kind == "raw":
        return data
    if kind == "id":
        return struct.pack("!H", q.id) + data
    base = bytearray(_template(q))
    if kind == "append":
        return bytes(base) + data
    for index, value in edits:
        base[index % len(base)] = value
    return bytes(base)


def oracle(data: bytes, q: dns.message.Message) -> set[str] | None:
    """The A addresses of ``data`` if it is a well-formed answer to ``q``, else None."""
    if len(data) > 1232:
        return None
    try:
        msg = dns.message.from_wire(data)
    except Exception:  # noqa: BLE001 - anything unparsable is no answer
        return None
    if (msg.id != q.id or not msg.flags & dns.flags.QR or msg.opcode() != dns.opcode.QUERY
            or msg.question != q.question):
        return None
    return {rd.to_text() for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A
            for rd in rrset}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes=st.lists(recipe, max_size=6), real=st.booleans())
def test_arbitrary_datagrams_never_escape_or_poison(recipes, real):
    net = FakeNet()
    allowed: set[str] = set()
    matching: list[bool] = []

    def handle(q):
        actions = []
        for i, (kind, data, edits) in enumerate(recipes):
            wire = build(kind, data, edits, q)
            seen = oracle(wire, q)
            matching.append(seen is not None)
            allowed.update(seen or ())
            actions.append(Send(wire, 0.0625 * (i + 1)))
        if real:
            actions.append(Send(reply(q, f"{q.question[0].name} 30 IN A {GOOD}"), 0.5))
            allowed.add(GOOD)
        return actions
    net.udp[S1] = handle
    res = Resolver(net, [S1], config=ResolverConfig(attempts=1, timeout=1.0))

    async def main():
        try:
            return await res.resolve("www.example")
        except ResolverError as exc:
            return exc
    got = run(main)
    if isinstance(got, list):
        assert got and set(got) <= allowed
    if real and not any(matching):
        assert got == [GOOD]
    if not real and not any(matching):
        assert isinstance(got, ResolverError)
