"""Bad input: the core survives 100,000 mutated and random frames and still works."""

from __future__ import annotations

import random

import dpkt
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
        eth(mac, A_MAC_PEER, ip(A_HOST, A_STACK, dpkt.udp.UDP(sport=1, dport=2, data=b"u"),
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


def test_hundred_thousand_bad_frames():
    stack = _router()
    rng = random.Random(2024)
    bases = _bases(stack)
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
