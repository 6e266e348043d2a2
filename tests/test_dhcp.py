"""The sans-I/O DHCPv4 client against a fake server, with explicit virtual times."""

from __future__ import annotations

import random

import dpkt.dhcp as dd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.dhcp import (
    BROADCAST,
    ZERO,
    Bound,
    DhcpClient,
    DhcpConfig,
    DhcpState,
    Lease,
    Lost,
    Renewed,
)

MAC = bytes.fromhex("02aabbccddee")
SERVER = bytes([198, 18, 0, 1])
OTHER_SERVER = bytes([198, 18, 0, 3])
ADDR = bytes([198, 18, 0, 50])
MASK24 = bytes([255, 255, 255, 0])
PRL = bytes([1, 3, 6, 15, 26, 51, 54, 58, 59])


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def ip(*parts: int) -> bytes:
    return bytes(parts)


def server_options(**over: bytes | None) -> dict[int, bytes]:
    """A good lease's options; keyword o<code>=value replaces, None removes."""
    opts: dict[int, bytes] = {54: SERVER, 1: MASK24, 3: SERVER,
                              6: ip(198, 18, 0, 53) + ip(198, 18, 0, 54), 51: u32(3600)}
    for key, value in over.items():
        code = int(key[1:])
        if value is None:
            opts.pop(code, None)
        else:
            opts[code] = value
    return opts


def reply(mtype: int, xid: int, *, yiaddr: bytes = ADDR, chaddr: bytes = MAC, op: int = 2,
          magic: int = dd.DHCP_MAGIC, opts: dict[int, bytes] | None = None,
          file: bytes = b"") -> bytes:
    """What a server sends: a BOOTREPLY built with dpkt."""
    options = server_options() if opts is None else opts
    pkt = dd.DHCP(op=op, xid=xid, yiaddr=int.from_bytes(yiaddr, "big"),
                  chaddr=chaddr.ljust(16, b"\x00"), magic=magic,
                  file=file.ljust(128, b"\x00"),
                  opts=[(53, bytes([mtype])), *options.items()])
    return bytes(pkt)


def decode(payload: bytes) -> tuple[dd.DHCP, dict[int, bytes], list[int]]:
    """A client message as dpkt sees it: header, options, option order."""
    pkt = dd.DHCP(payload)
    return pkt, dict(pkt.opts), [code for code, _ in pkt.opts]


def new_client(seed: int = 7, **cfg: float) -> DhcpClient:
    return DhcpClient(MAC, random.Random(seed), config=DhcpConfig(**cfg))


def one_sent(c: DhcpClient):
    out = c.drain()
    assert len(out) == 1, out
    return out[0]


def to_requesting(c: DhcpClient, now: float = 100.0, offer_at: float = 100.0) -> int:
    c.start(now)
    xid = decode(one_sent(c).payload)[0].xid
    c.receive(reply(dd.DHCPOFFER, xid), offer_at)
    one_sent(c)
    assert c.state is DhcpState.REQUESTING
    return xid


def to_bound(c: DhcpClient, ack_opts: dict[int, bytes] | None = None) -> Lease:
    xid = to_requesting(c)
    c.receive(reply(dd.DHCPACK, xid, opts=ack_opts), 101.0)
    assert c.state is DhcpState.BOUND
    assert c.lease is not None
    return c.lease


# ------------------------------------------------------------ the exchange

def test_discover_is_exact():
    c = DhcpClient(MAC, random.Random(7), hostname="box")
    c.start(100.0)
    sent = one_sent(c)
    assert (sent.src, sent.dst) == (ZERO, BROADCAST)
    raw = sent.payload
    assert len(raw) >= 300
    pkt, opts, order = decode(raw)
    assert (pkt.op, pkt.hrd, pkt.hln, pkt.hops) == (1, 1, 6, 0)
    assert pkt.xid == random.Random(7).getrandbits(32)
    assert raw[10:12] == b"\x80\x00"                      # BROADCAST flag
    assert raw[12:28] == bytes(16)                        # ciaddr, yiaddr, siaddr, giaddr
    assert raw[28:44] == MAC + bytes(10)
    assert raw[236:240] == bytes.fromhex("63825363")
    assert order == [53, 61, 57, 12, 55]
    assert opts[53] == b"\x01" and opts[61] == b"\x01" + MAC
    assert opts[55] == PRL and opts[57] == (1500).to_bytes(2, "big") and opts[12] == b"box"
    assert c.state is DhcpState.SELECTING


def test_discover_retransmits_with_backoff_forever():
    c = new_client(seed=3)
    c.start(0.0)
    xid = decode(one_sent(c).payload)[0].xid
    prev, jittered = 0.0, False
    for base in (4, 8, 16, 32, 64, 64, 64, 64, 64):
        d = c.next_deadline()
        assert d is not None and base - 1 <= d - prev <= base + 1
        jittered |= abs((d - prev) - base) > 1e-6
        c.on_timer(d - 0.01)
        assert c.drain() == []                            # not yet due
        c.on_timer(d)
        pkt, opts, _ = decode(one_sent(c).payload)
        assert pkt.xid == xid and opts[53] == b"\x01" and pkt.secs == int(d)
        prev = d
    assert jittered and c.state is DhcpState.SELECTING


def test_offer_gets_a_broadcast_request_with_50_and_54():
    c = new_client()
    c.start(100.0)
    disc = decode(one_sent(c).payload)[0]
    c.receive(reply(dd.DHCPOFFER, disc.xid), 102.0)
    sent = one_sent(c)
    assert (sent.src, sent.dst) == (ZERO, BROADCAST)
    pkt, opts, order = decode(sent.payload)
    assert pkt.xid == disc.xid and pkt.flags == 0x8000 and pkt.ciaddr == 0
    assert pkt.secs == disc.secs
    assert opts[53] == b"\x03" and opts[50] == ADDR and opts[54] == SERVER
    assert order[:3] == [53, 50, 54] and opts[55] == PRL and opts[61] == b"\x01" + MAC
    assert c.state is DhcpState.REQUESTING


def test_ack_binds_with_times_from_the_first_request():
    c = new_client()
    xid = to_requesting(c, offer_at=101.0)
    c.on_timer(c.next_deadline())                         # REQUEST retransmitted
    one_sent(c)
    opts = server_options(o26=(1400).to_bytes(2, "big"), o15=b"lab.example")
    c.receive(reply(dd.DHCPACK, xid, opts=opts), 107.0)
    lease = c.lease
    assert lease == Lease(addr=ADDR, prefixlen=24, router=SERVER,
                          dns=(ip(198, 18, 0, 53), ip(198, 18, 0, 54)), server_id=SERVER,
                          lease_time=3600.0, t1=1800.0, t2=3150.0, obtained=101.0,
                          mtu=1400, domain="lab.example")
    assert list(c.events) == [Bound(lease)]
    assert c.state is DhcpState.BOUND and c.next_deadline() == 101.0 + 1800.0
    assert c.drain() == []


def test_later_offers_are_ignored():
    c = new_client()
    xid = to_requesting(c)
    c.receive(reply(dd.DHCPOFFER, xid, yiaddr=ip(198, 18, 0, 77),
                    opts=server_options(o54=OTHER_SERVER)), 100.7)
    assert c.counters["dhcp_extra_offer"] == 1
    assert c.drain() == [] and c.state is DhcpState.REQUESTING


def test_request_retried_four_times_then_discover_again():
    c = new_client(seed=11)
    xid = to_requesting(c, now=0.0, offer_at=0.0)
    prev = 0.0
    for base in (4, 8, 16, 32):
        d = c.next_deadline()
        assert d is not None and base - 1 <= d - prev <= base + 1
        c.on_timer(d)
        pkt, opts, _ = decode(one_sent(c).payload)
        assert pkt.xid == xid and opts[53] == b"\x03"
        prev = d
    d = c.next_deadline()
    assert d is not None and 63 <= d - prev <= 65
    c.on_timer(d)
    pkt, opts, _ = decode(one_sent(c).payload)
    assert opts[53] == b"\x01" and pkt.xid != xid
    assert c.state is DhcpState.SELECTING and c.counters["dhcp_request_timeout"] == 1


def test_nak_returns_to_init_then_discovers():
    c = new_client()
    xid = to_requesting(c)
    c.receive(reply(dd.DHCPNAK, xid, yiaddr=ZERO, opts={54: SERVER}), 101.0)
    assert c.state is DhcpState.INIT and c.lease is None and c.counters["dhcp_nak"] == 1
    assert c.drain() == [] and c.next_deadline() == 103.0
    c.on_timer(103.0)
    pkt, opts, _ = decode(one_sent(c).payload)
    assert opts[53] == b"\x01" and pkt.xid != xid and c.state is DhcpState.SELECTING


@pytest.mark.parametrize("mtype", [dd.DHCPACK, dd.DHCPNAK])
def test_answer_from_another_server_is_dropped(mtype):
    c = new_client()
    xid = to_requesting(c)
    c.receive(reply(mtype, xid, opts=server_options(o54=OTHER_SERVER)), 101.0)
    assert c.counters["dhcp_bad_server"] == 1
    assert c.state is DhcpState.REQUESTING and not c.events


def test_ack_for_another_address_is_dropped():
    c = new_client()
    xid = to_requesting(c)
    c.receive(reply(dd.DHCPACK, xid, yiaddr=ip(198, 18, 0, 51)), 101.0)
    assert c.counters["dhcp_ack_mismatch"] == 1 and c.state is DhcpState.REQUESTING


def test_message_when_nothing_is_outstanding_is_dropped():
    c = new_client()
    c.receive(reply(dd.DHCPOFFER, 1), 0.0)
    to_bound(c)
    c.receive(reply(dd.DHCPACK, c._xid), 200.0)
    assert c.counters["dhcp_not_waiting"] == 2 and c.state is DhcpState.BOUND


# ------------------------------------------------------------ renewing, rebinding, expiry

def test_renews_at_exactly_t1_unicast_from_the_lease():
    c = new_client()
    lease = to_bound(c)
    t1 = lease.obtained + lease.t1
    c.on_timer(t1 - 0.001)
    assert c.drain() == [] and c.state is DhcpState.BOUND
    c.on_timer(t1)
    sent = one_sent(c)
    assert (sent.src, sent.dst) == (ADDR, SERVER)
    pkt, opts, _ = decode(sent.payload)
    assert opts[53] == b"\x03" and pkt.ciaddr == int.from_bytes(ADDR, "big")
    assert pkt.flags == 0 and 50 not in opts and 54 not in opts
    assert c.state is DhcpState.RENEWING
    c.receive(reply(dd.DHCPACK, pkt.xid, opts=server_options(o51=u32(7200))), t1 + 1)
    new = c.lease
    assert new is not None and new.obtained == t1 and new.lease_time == 7200.0
    assert c.events[-1] == Renewed(new) and c.state is DhcpState.BOUND
    assert c.next_deadline() == t1 + 3600.0


def test_renewing_retransmits_then_rebinds_then_expires():
    c = new_client()
    lease = to_bound(c)                                   # obtained 100.0, 3600 s
    t1, t2, end = 1900.0, 3250.0, 3700.0
    c.on_timer(t1)
    renew_xid = decode(one_sent(c).payload)[0].xid
    # RFC 2131 §4.4.5: half the time left until T2, at least 60 s, never past T2.
    waits = [675.0, 337.5, 168.75, 84.375, 60.0]
    at = t1
    for wait in waits:
        at += wait
        assert c.next_deadline() == pytest.approx(at)
        c.on_timer(at)
        sent = one_sent(c)
        assert sent.dst == SERVER and decode(sent.payload)[0].xid == renew_xid
    assert c.state is DhcpState.RENEWING
    assert c.next_deadline() == pytest.approx(t2)        # 60 s would pass T2: capped
    c.on_timer(t2)
    sent = one_sent(c)
    assert (sent.src, sent.dst) == (ADDR, BROADCAST)
    pkt, opts, _ = decode(sent.payload)
    assert pkt.ciaddr == int.from_bytes(ADDR, "big") and 50 not in opts and 54 not in opts
    assert pkt.xid != renew_xid and c.state is DhcpState.REBINDING
    # Half the remaining lease, at least 60 s, never past expiry.
    assert c.next_deadline() == pytest.approx(t2 + 225.0)
    c.on_timer(t2 + 225.0)
    one_sent(c)
    assert c.next_deadline() == pytest.approx(t2 + 225.0 + 112.5)
    c.on_timer(t2 + 337.5)
    one_sent(c)
    assert c.next_deadline() == pytest.approx(t2 + 337.5 + 60.0)   # 56.25 < 60
    c.on_timer(t2 + 397.5)
    one_sent(c)
    assert c.next_deadline() == pytest.approx(end)                 # capped at expiry
    c.on_timer(end)
    assert list(c.events)[-1] == Lost(lease, "expired")
    assert c.lease is None and c.state is DhcpState.SELECTING
    pkt, opts, _ = decode(one_sent(c).payload)
    assert opts[53] == b"\x01" and pkt.ciaddr == 0


def test_late_timer_goes_straight_to_rebinding_or_expiry():
    c = new_client()
    lease = to_bound(c)
    c.on_timer(3300.0)                                    # past T2, T1 never seen
    sent = one_sent(c)
    assert sent.dst == BROADCAST and c.state is DhcpState.REBINDING
    c2 = new_client()
    lease = to_bound(c2)
    c2.on_timer(99999.0)
    assert list(c2.events)[-1] == Lost(lease, "expired") and c2.state is DhcpState.SELECTING


def test_short_lease_uses_the_configured_minimum_retransmit():
    c = new_client(min_retransmit=2.0)
    to_bound(c, server_options(o51=u32(20)))              # obtained 100: T1 110, T2 117.5
    c.on_timer(110.0)
    one_sent(c)
    assert c.next_deadline() == pytest.approx(113.75)
    c.on_timer(113.75)
    c.on_timer(c.next_deadline())
    assert c.next_deadline() == pytest.approx(117.5)      # 115.625 + max(2, 0.9375), capped


def test_rebinding_accepts_another_server():
    c = new_client()
    to_bound(c)
    c.on_timer(3250.0)
    xid = decode(one_sent(c).payload)[0].xid
    c.receive(reply(dd.DHCPACK, xid, opts=server_options(o54=OTHER_SERVER)), 3251.0)
    assert c.state is DhcpState.BOUND and c.lease is not None
    assert c.lease.server_id == OTHER_SERVER and isinstance(c.events[-1], Renewed)


def test_renewal_with_another_address_is_lost_then_bound():
    c = new_client()
    old = to_bound(c)
    c.on_timer(1900.0)
    xid = decode(one_sent(c).payload)[0].xid
    c.receive(reply(dd.DHCPACK, xid, yiaddr=ip(198, 18, 0, 60)), 1901.0)
    assert c.lease is not None and c.lease.addr == ip(198, 18, 0, 60)
    assert list(c.events)[-2:] == [Lost(old, "address_changed"), Bound(c.lease)]


def test_nak_while_renewing_loses_the_lease():
    c = new_client()
    old = to_bound(c)
    c.on_timer(1900.0)
    xid = decode(one_sent(c).payload)[0].xid
    c.receive(reply(dd.DHCPNAK, xid, yiaddr=ZERO, opts={54: SERVER}), 1901.0)
    assert c.events[-1] == Lost(old, "nak") and c.lease is None
    assert c.state is DhcpState.INIT and c.next_deadline() == 1903.0


def test_infinite_lease_is_never_renewed():
    c = new_client()
    lease = to_bound(c, server_options(o51=u32(0xFFFFFFFF), o58=u32(100)))
    assert lease.lease_time == float("inf") and c.next_deadline() is None


# ------------------------------------------------------------ release, decline

def test_release_is_unicast_with_ciaddr_and_server_id():
    c = new_client()
    lease = to_bound(c)
    c.release(500.0)
    sent = one_sent(c)
    assert (sent.src, sent.dst) == (ADDR, SERVER)
    pkt, opts, _ = decode(sent.payload)
    assert opts[53] == b"\x07" and opts[54] == SERVER and opts[61] == b"\x01" + MAC
    assert pkt.ciaddr == int.from_bytes(ADDR, "big") and 50 not in opts
    assert c.state is DhcpState.RELEASED and c.lease is None and c.next_deadline() is None
    assert c.events[-1] == Lost(lease, "released")


def test_release_before_bound_sends_nothing_and_start_works_again():
    c = new_client()
    c.start(0.0)
    c.drain()
    c.release(1.0)
    assert c.drain() == [] and c.state is DhcpState.RELEASED and c.next_deadline() is None
    c.start(2.0)
    assert decode(one_sent(c).payload)[1][53] == b"\x01" and c.state is DhcpState.SELECTING


def test_decline_broadcasts_and_waits_ten_seconds():
    c = new_client()
    lease = to_bound(c)
    c.decline(102.0)
    sent = one_sent(c)
    assert (sent.src, sent.dst) == (ZERO, BROADCAST)
    _, opts, _ = decode(sent.payload)
    assert opts[53] == b"\x04" and opts[50] == ADDR and opts[54] == SERVER
    assert c.events[-1] == Lost(lease, "declined") and c.next_deadline() == 112.0


# ------------------------------------------------------------ drops

def _set(raw: bytes, at: int, value: bytes) -> bytes:
    return raw[:at] + value + raw[at + len(value):]


def _opts(**over: bytes | None) -> dict[int, bytes]:
    return server_options(**over)


BAD_OFFERS = {
    "dhcp_bad_xid": lambda x: reply(2, x ^ 1),
    "dhcp_bad_chaddr": lambda x: reply(2, x, chaddr=bytes.fromhex("02aabbccddef")),
    "dhcp_not_reply": lambda x: reply(2, x, op=1),
    "dhcp_bad_cookie": lambda x: reply(2, x, magic=0x63825364),
    "dhcp_truncated": lambda x: reply(2, x)[:239],
    "dhcp_too_long": lambda x: reply(2, x) + bytes(1300),
    "dhcp_no_msg_type": lambda x: _set(reply(2, x), 240, b"\x00\x00\x00"),
    "dhcp_unexpected_type": lambda x: reply(dd.DHCPACK, x),
    "dhcp_no_mask": lambda x: reply(2, x, opts=_opts(o1=None)),
    "dhcp_no_server_id": lambda x: reply(2, x, opts=_opts(o54=None)),
    "dhcp_no_lease_time": lambda x: reply(2, x, opts=_opts(o51=None)),
}
for _n, _m in [("gap", "ff00ff00"), ("31", "fffffffe"), ("32", "ffffffff"), ("0", "00000000"),
               ("short", "ffffff")]:
    BAD_OFFERS[f"dhcp_bad_mask:{_n}"] = (
        lambda x, m=_m: reply(2, x, opts=_opts(o1=bytes.fromhex(m))))
for _a in [ZERO, BROADCAST, ip(127, 0, 0, 1), ip(224, 0, 0, 1), ip(198, 18, 0, 0),
           ip(198, 18, 0, 255), ip(0, 1, 2, 3), ip(240, 0, 0, 1)]:
    BAD_OFFERS[f"dhcp_bad_yiaddr:{_a.hex()}"] = lambda x, a=_a: reply(2, x, yiaddr=a)
for _t in (0, 9):
    BAD_OFFERS[f"dhcp_bad_lease_time:{_t}"] = lambda x, t=_t: reply(2, x, opts=_opts(o51=u32(t)))
BAD_OFFERS["dhcp_bad_server_id"] = lambda x: reply(2, x, opts=_opts(o54=BROADCAST))
# Option walk faults: a length past the end, a lone code byte, no end, junk after end,
# a bad overload value.
BAD_OFFERS["dhcp_bad_option:past-end"] = lambda x: reply(2, x)[:-1] + b"\x0f\x20abc"
BAD_OFFERS["dhcp_bad_option:lone-code"] = lambda x: reply(2, x)[:-1] + b"\x0f"
BAD_OFFERS["dhcp_bad_option:no-end"] = lambda x: reply(2, x)[:-1]
BAD_OFFERS["dhcp_bad_option:after-end"] = lambda x: reply(2, x) + b"\x00\x01"
BAD_OFFERS["dhcp_bad_option:overload"] = lambda x: reply(2, x, opts=_opts(o52=b"\x04"))
BAD_OFFERS["dhcp_bad_option:overload-no-end"] = (
    lambda x: reply(2, x, opts=_opts(o52=b"\x01"), file=b"\x03\x04" + SERVER))


@pytest.mark.parametrize("case", sorted(BAD_OFFERS))
def test_bad_offer_is_dropped_and_counted(case):
    c = new_client()
    c.start(0.0)
    xid = decode(one_sent(c).payload)[0].xid
    deadline = c.next_deadline()
    c.receive(BAD_OFFERS[case](xid), 1.0)
    assert dict(c.counters) == {case.split(":")[0]: 1}
    assert c.state is DhcpState.SELECTING and c.drain() == [] and not c.events
    assert c.next_deadline() == deadline
    c.receive(reply(2, xid), 1.5)                         # the good offer still works
    assert c.state is DhcpState.REQUESTING


def test_garbage_is_a_counted_drop():
    c = new_client()
    c.start(0.0)
    c.drain()
    rnd = random.Random(5)
    for size in (0, 1, 100, 240, 300, 576, 1472, 1473, 9000):
        c.receive(bytes(rnd.getrandbits(8) for _ in range(size)), 1.0)
    c.receive(memoryview(b"\x02" * 400), 1.0)
    assert sum(c.counters.values()) == 10 and c.state is DhcpState.SELECTING


def test_overloaded_file_field_carries_options():
    c = new_client()
    xid = to_requesting(c)
    ack = reply(dd.DHCPACK, xid, opts=_opts(o52=b"\x01", o3=None),
                file=b"\x03\x04" + SERVER + b"\xff")
    c.receive(ack, 101.0)
    assert c.lease is not None and c.lease.router == SERVER


SOFT = {
    "dhcp_bad_t1t2": (_opts(o58=u32(3000), o59=u32(2000)),
                      lambda le: (le.t1, le.t2) == (1800.0, 3150.0)),
    "dhcp_router_ignored": (_opts(o3=ip(10, 0, 0, 1) + ip(198, 18, 0, 255) + ADDR),
                            lambda le: le.router is None),
    "dhcp_dns_ignored": (_opts(o6=b"".join(ip(198, 18, 1, i) for i in range(1, 51))),
                         lambda le: le.dns == tuple(ip(198, 18, 1, i) for i in (1, 2, 3))),
    "dhcp_bad_mtu": (_opts(o26=(100).to_bytes(2, "big")), lambda le: le.mtu is None),
    "dhcp_bad_domain": (_opts(o15=b"evil domain;rm"), lambda le: le.domain is None),
}


@pytest.mark.parametrize("case", sorted(SOFT))
def test_nonsense_optional_facts_are_ignored_and_counted(case):
    c = new_client()
    opts, check = SOFT[case]
    lease = to_bound(c, opts)
    assert c.counters[case] >= 1 and check(lease)
    assert lease.addr == ADDR and lease.prefixlen == 24


def test_unicast_dns_only():
    c = new_client()
    bad = ZERO + ip(127, 0, 0, 1) + ip(224, 0, 0, 251) + BROADCAST + ip(255, 1, 2, 3)
    lease = to_bound(c, _opts(o6=bad + ip(198, 18, 0, 53)))
    assert lease.dns == (ip(198, 18, 0, 53),) and c.counters["dhcp_dns_ignored"] == 5


def test_events_and_outbox_are_bounded():
    c = new_client(max_events=2, max_outbox=3)
    c.start(0.0)
    for _ in range(10):
        c.on_timer(c.next_deadline())
    assert len(c.outbox) == 3 and c.counters["dhcp_outbox_overflow"] == 8
    c2 = new_client(max_events=2)
    to_bound(c2)
    for _ in range(5):                                    # five renewals, one event each
        c2.on_timer(c2.next_deadline())
        xid = decode(one_sent(c2).payload)[0].xid
        c2.receive(reply(dd.DHCPACK, xid), c2.next_deadline() - 1)
    assert len(c2.events) == 2 and all(isinstance(e, Renewed) for e in c2.events)


# ------------------------------------------------------------ properties

def assert_lease_is_sane(lease: Lease) -> None:
    a = int.from_bytes(lease.addr, "big")
    assert 1 <= lease.prefixlen <= 30
    host = a & (0xFFFFFFFF >> lease.prefixlen)
    assert a >> 24 not in (0, 127) and a >> 24 < 224
    assert host not in (0, 0xFFFFFFFF >> lease.prefixlen)
    assert lease.lease_time >= 10 and len(lease.server_id) == 4
    assert lease.lease_time == float("inf") or 0 < lease.t1 < lease.t2 < lease.lease_time
    assert len(lease.dns) <= 3
    for d in lease.dns:
        assert d[0] not in (0, 127) and d[0] < 224
    if lease.router is not None:
        r = int.from_bytes(lease.router, "big")
        assert r >> lease.prefixlen << lease.prefixlen == a >> lease.prefixlen << lease.prefixlen
        assert r != a
    assert lease.mtu is None or 576 <= lease.mtu <= 9000
    assert lease.domain is None or len(lease.domain) <= 253


def _events_sane(c: DhcpClient) -> None:
    for ev in c.events:
        assert_lease_is_sane(ev.lease)
    if c.lease is not None:
        assert_lease_is_sane(c.lease)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=1600))
def test_random_bytes_never_raise(data):
    c = new_client()
    c.start(0.0)
    c.receive(data, 1.0)
    assert c.state is DhcpState.SELECTING and sum(c.counters.values()) == 1


mutations = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=12)


def _mutate(raw: bytes, edits, cut: int | None) -> bytes:
    buf = bytearray(raw)
    for at, value in edits:
        if at < len(buf):
            buf[at] = value
    return bytes(buf[:cut] if cut is not None else buf)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(edits=mutations, cut=st.none() | st.integers(0, 400), xid_ok=st.booleans())
def test_mutated_offer_and_ack_never_raise_nor_bind_nonsense(edits, cut, xid_ok):
    c = new_client()
    c.start(0.0)
    xid = decode(one_sent(c).payload)[0].xid
    offer = reply(dd.DHCPOFFER, xid if xid_ok else xid ^ 0x10000)
    c.receive(_mutate(offer, edits, cut), 1.0)
    _events_sane(c)
    if c.state is DhcpState.REQUESTING:
        c.drain()
    else:
        c.receive(reply(dd.DHCPOFFER, xid), 1.0)
        one_sent(c)
    opts = server_options(o58=u32(100), o59=u32(200), o26=(1500).to_bytes(2, "big"),
                          o15=b"lab.example")
    c.receive(_mutate(reply(dd.DHCPACK, c._xid, opts=opts), edits, cut), 2.0)
    _events_sane(c)
    assert c.state in (DhcpState.REQUESTING, DhcpState.BOUND, DhcpState.INIT)
    if c.state is DhcpState.BOUND:
        assert isinstance(c.events[-1], Bound)
