"""Bad input: the core survives 100,000 mutated and random frames and still works."""

from __future__ import annotations

import random

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.core import Stack
from stack.skbuff import SkBuff
from stack.wire.ipv4 import ip_bytes
from tests.test_core import A_HOST, A_MAC_PEER, A_STACK, B_HOST, arp, echo, eth, ip

N_FRAMES = 100_000


def _router() -> Stack:
    s = Stack(forwarding=True, rng=random.Random(3))
    s.add_interface("a", f"{A_STACK}/24", mtu=1500, offload=False)
    s.add_interface("b", "198.19.0.2/24", mtu=1500, offload=False)
    return s


def _bases(stack: Stack) -> list[bytes]:
    mac = stack.interfaces[0].mac
    tcp = dpkt.tcp.TCP(sport=1, dport=80, seq=5, flags=dpkt.tcp.TH_SYN, win=100,
                       opts=b"\x02\x04\x05\xb4\x01\x03\x03\x07")
    with_opts = ip(A_HOST, A_STACK, echo())
    with_opts.opts = b"\x07\x07\x04" + b"\0" * 5  # record route
    with_opts.hl = 7
    frag = ip(A_HOST, A_STACK, echo(data=b"f" * 64))
    frag.mf = 1
    return [
        eth(b"\xff" * 6, A_MAC_PEER, arp(1, A_MAC_PEER, A_HOST, b"\0" * 6, A_STACK), 0x0806),
        eth(mac, A_MAC_PEER, arp(2, A_MAC_PEER, A_HOST, mac, A_STACK), 0x0806),
        eth(mac, A_MAC_PEER, ip(A_HOST, A_STACK, echo())),
        eth(mac, A_MAC_PEER, ip(A_HOST, B_HOST, echo(), ttl=2)),
        eth(mac, A_MAC_PEER, ip(A_HOST, A_STACK, tcp, p=6)),
        eth(mac, A_MAC_PEER, ip(A_HOST, A_STACK, dpkt.udp.UDP(sport=1, dport=2, ulen=9, data=b"u"),
                                p=17)),
        eth(mac, A_MAC_PEER, with_opts),
        eth(mac, A_MAC_PEER, frag),
    ]


def _mutate(rng: random.Random, base: bytes) -> bytes:
    f = bytearray(base)
    kind = rng.randrange(6)
    if kind == 0:  # flip some bytes anywhere
        for _ in range(rng.randrange(1, 4)):
            f[rng.randrange(len(f))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del f[rng.randrange(len(f)):]
    elif kind == 2:  # trailing garbage
        f += rng.randbytes(rng.randrange(1, 64))
    elif kind == 3:  # a header field of IPv4 (version/IHL, length, flags, ttl, proto)
        at = 14 + rng.choice([0, 2, 3, 6, 8, 9, 20])
        if at < len(f):
            f[at] = rng.randrange(256)
    elif kind == 4:  # random bytes with a plausible Ethernet header
        f = bytearray(f[:14] + rng.randbytes(rng.randrange(0, 200)))
    else:  # anything at all
        f = bytearray(rng.randbytes(rng.randrange(0, 120)))
    return bytes(f)


def _ping_answered(stack: Stack) -> bool:
    stack.drain()
    mac = stack.interfaces[0].mac
    # Relearn A's MAC (mutated ARP may have poisoned the cache), then ping.
    frames = [eth(b"\xff" * 6, A_MAC_PEER, arp(1, A_MAC_PEER, A_HOST, b"\0" * 6, A_STACK),
                  0x0806),
              eth(mac, A_MAC_PEER, ip(A_HOST, A_STACK, echo(77, 78, b"alive")))]
    for f in frames:
        stack.receive_frame(stack.interfaces[0], SkBuff.from_bytes(f), 1e6)
    for _iface, skb in stack.drain():
        e = dpkt.ethernet.Ethernet(skb.tobytes())
        if e.type == 0x0800 and isinstance(e.data.data, dpkt.icmp.ICMP) and \
                e.data.data.type == 0 and e.data.data.data.id == 77:
            return e.dst == A_MAC_PEER and e.data.dst == ip_bytes(A_HOST)
    return False


def _check_output(stack: Stack) -> None:
    """Whatever the stack emits is well formed: IPv4 header checksums verify."""
    for _iface, skb in stack.drain():
        f = skb.tobytes()
        if f[12:14] == b"\x08\x00":
            ihl = (f[14] & 15) * 4
            hdr = f[14:14 + ihl]
            total = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, ihl, 2))
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            assert total == 0xFFFF


@pytest.mark.parametrize("with_flow", [False, True], ids=["plain", "flow"])
def test_hundred_thousand_bad_frames(with_flow):
    stack = _router()
    rng = random.Random(2024)
    bases = _bases(stack)
    offered: list[int] = []
    if with_flow:  # the TCP base's 4-tuple in the flow table, as a splice relaying has
        def handler(skb: SkBuff, now: float) -> bool:
            offered.append(skb.tail - skb.data)
            return False
        stack.flows[bases[4][26:38]] = handler
    ifaces = stack.interfaces
    now = 0.0
    for i in range(N_FRAMES):
        frame = _mutate(rng, rng.choice(bases))
        now += 0.0001
        stack.receive_frame(ifaces[i & 1], SkBuff.from_bytes(frame, headroom=64), now)
        if i % 64 == 0:
            _check_output(stack)
            deadline = stack.next_deadline()
            if deadline is not None and deadline <= now:
                stack.on_timer(now)
    c = stack.counters
    assert c["rx_frames"] == N_FRAMES
    assert c["rx_frames"] == c["rx_arp"] + c["rx_local"] + c["rx_forwarded"] + c["rx_dropped"]
    assert c["rx_dropped"] > N_FRAMES // 4  # most mutations must be caught and counted
    assert sum(v for k, v in c.items() if k.startswith("drop.") and
               k not in ("drop.arp_unresolved", "drop.arp_queue_full",
                         "drop.arp_table_full")) == c["rx_dropped"]
    assert len(stack.neigh) <= stack.neigh.max_entries
    assert stack.reasm.bytes <= stack.reasm.max_bytes
    assert _ping_answered(stack)
    assert not with_flow or (offered and min(offered) >= 54)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=20))
def test_arbitrary_frames_never_raise(frames):
    stack = _router()
    for f in frames:
        for iface in stack.interfaces:
            stack.receive_frame(iface, SkBuff.from_bytes(f), 1.0)
    c = stack.counters
    assert c["rx_frames"] == c["rx_arp"] + c["rx_local"] + c["rx_forwarded"] + c["rx_dropped"]
    assert _ping_answered(stack)


# -- the flow table path (a splice relaying) -----------------------------------------
_FLOW_TCP = dpkt.tcp.TCP(sport=40000, dport=1080, seq=9, ack=3, flags=dpkt.tcp.TH_ACK,
                         win=500, data=b"payload")


def _flow_stack() -> tuple[Stack, bytes, list[int]]:
    """A stack with one flow registered, the frame of that flow, and the lengths of
    the frames its handler was given."""
    s = _router()
    mac = s.interfaces[0].mac
    frame = eth(mac, A_MAC_PEER, ip(A_HOST, A_STACK, _FLOW_TCP, p=6))
    seen: list[int] = []

    def handler(skb: SkBuff, now: float) -> bool:
        seen.append(skb.tail - skb.data)
        return False  # the normal way

    s.flows[frame[26:38]] = handler
    return s, frame, seen


def _balanced(stack: Stack) -> bool:
    c = stack.counters
    return c["rx_frames"] == c["rx_arp"] + c["rx_local"] + c["rx_forwarded"] + c["rx_dropped"]


def test_truncated_ipv4_frames_with_a_flow_registered_are_counted_drops():
    stack, frame, seen = _flow_stack()
    for n in range(14, 54):
        stack.receive_frame(stack.interfaces[0], SkBuff.from_bytes(frame[:n]), 1.0)
    assert stack.counters["rx_dropped"] == 54 - 14
    assert _balanced(stack)
    assert seen == []  # too short for an IPv4 + TCP header: never offered to the flow
    stack.receive_frame(stack.interfaces[0], SkBuff.from_bytes(frame), 1.0)
    assert seen == [len(frame)]


@st.composite
def _flow_frames(draw, base: bytes | None = None) -> bytes:
    """Frames of a registered flow: truncated, mutated, extended or replaced."""
    frame = bytearray(base or eth(b"\0" * 6, A_MAC_PEER, ip(A_HOST, A_STACK, _FLOW_TCP, p=6)))
    kind = draw(st.sampled_from(["cut", "flip", "tail", "any"]))
    if kind == "cut":
        frame = frame[:draw(st.integers(0, len(frame)))]
    elif kind == "flip":
        for at, value in draw(st.lists(st.tuples(st.integers(14, len(frame) - 1),
                                                 st.integers(0, 255)), max_size=4)):
            frame[at] = value
    elif kind == "tail":
        frame += draw(st.binary(max_size=64))
    else:
        frame = frame[:14] + draw(st.binary(max_size=80))
    return bytes(frame)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_flow_frames(), min_size=1, max_size=10))
def test_flow_frames_never_raise(frames):
    stack, _frame, _seen = _flow_stack()
    mac = stack.interfaces[0].mac
    for f in frames:
        stack.receive_frame(stack.interfaces[0], SkBuff.from_bytes(mac + f[6:]), 1.0)
    assert _balanced(stack)
    assert _ping_answered(stack)


def test_a_splice_relaying_survives_mutated_frames_of_its_own_flow():
    """Hostile frames of a relayed 4-tuple go through the core's flow table to the
    splice relay: none raises, each is counted, and the relay still carries data."""
    from tests.splice.test_splicer import CLIENT, PROXY_C, RELAYING, connect, exchange, simulate

    async def body(w):
        reader, writer = await connect(w)
        (pair,) = w.pairs
        assert await w.until(lambda: pair.client.state in RELAYING, timeout=1.0)
        proxy, tcb = w.p, pair.client.tcb
        iface = proxy.interfaces[0]
        # An old segment (already acknowledged): relayed intact it harms nobody.
        old = dpkt.tcp.TCP(sport=tcb.remote_port, dport=tcb.local_port,
                           seq=(tcb.rcv_nxt - 3) & 0xFFFFFFFF, ack=tcb.snd_una,
                           flags=dpkt.tcp.TH_ACK, win=500, data=b"old")
        base = eth(iface.mac, w.c.interfaces[0].mac, ip(CLIENT, PROXY_C, old, p=6))
        assert base[26:38] in proxy.flows
        fed = [0]

        @settings(max_examples=300, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(_flow_frames(base), min_size=1, max_size=10))
        def feed(frames):
            for f in frames:
                proxy.receive_frame(iface, SkBuff.from_bytes(f), w.driver.now())
                fed[0] += 1
            c = proxy.counters
            assert _balanced(proxy), {k: v for k, v in c.items() if k.startswith("rx")}

        before = proxy.counters["rx_frames"]
        relayed = w.splicer.counters["flow_path_segments"]
        feed()
        assert proxy.counters["rx_frames"] - before == fed[0] > 300
        assert w.splicer.counters["flow_path_segments"] > relayed  # the flow path ran
        data = bytes(range(256)) * 64
        assert await exchange(reader, writer, data) == data

    simulate(body)
