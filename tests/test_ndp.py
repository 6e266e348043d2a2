"""Neighbor Discovery (stack/ndp.py) and own IPv6 addresses (stack/addrconf.py),
sans-I/O: the cache's states, NS/NA answers, DAD, RFC 7217 identifiers, SLAAC."""

from __future__ import annotations

import math
import random

import pytest

from stack.addrconf import AddressTable, AddrOrigin, AddrState, stable_iid
from stack.iface import Interface
from stack.ndp import (
    DELAY_FIRST_PROBE_TIME,
    MAX_UNICAST_SOLICIT,
    NdpTransmit,
    NeighborCache,
    NeighborDiscovery,
)
from stack.neigh import NeighState
from stack.wire import icmp6, ndp
from stack.wire.ipv6 import (
    ALL_NODES,
    ALL_ROUTERS,
    UNSPECIFIED,
    ip6_bytes,
    is_link_local,
    multicast_mac,
    solicited_node,
)
from stack.wire.ndp import NdpOptions, NeighborAdvertisement, NeighborSolicitation

SECRET = bytes(range(32))
OWN = ip6_bytes("2001:2:0:1::2")
PEER = ip6_bytes("2001:2:0:1::1")
ROUTER = ip6_bytes("fe80::1")
PEER_MAC = b"\x02\x00\x00\x00\x00\xa1"
OTHER_MAC = b"\x02\x00\x00\x00\x00\xa2"
T0 = 1000.0


def make(router: bool = False, **kw):
    iface = Interface(0, "eth0", b"\x02\x00\x00\x00\x00\x01", b"\0\0\0\0", 32)
    rng = random.Random(7)
    table = AddressTable(SECRET, rng, dad_delay=0.0, **kw)
    nd = NeighborDiscovery(NeighborCache(rng), table, router=router)
    return iface, table, nd


def assigned(iface, table, addr=OWN, plen=64):
    a = table.add(iface, addr, plen, T0)
    a.state, a.next_event = AddrState.PREFERRED, math.inf
    return a


def na_msg(target, mac=None, s=False, o=True, r=False) -> NeighborAdvertisement:
    return NeighborAdvertisement(target, r, s, o, NdpOptions(target_lladdr=mac))


# -- the cache ------------------------------------------------------------------------
def test_incomplete_resolved_by_solicited_na_then_ages_through_stale_delay_probe():
    iface, table, nd = make()
    assigned(iface, table)
    c = nd.cache
    n = c.start_resolution(iface, PEER, T0)
    assert n.state is NeighState.INCOMPLETE
    fx = nd.advertisement(iface, na_msg(PEER, PEER_MAC, s=True), T0 + 0.1)
    assert fx.resolved == [] and n.state is NeighState.REACHABLE and n.mac == PEER_MAC
    t = n.expires
    assert T0 + 0.1 + 15 <= t < T0 + 0.1 + 45      # ReachableTime: 30 s times [0.5, 1.5)
    assert c.expire(t) == ([], []) and n.state is NeighState.STALE
    c.used(n, t + 1)
    assert n.state is NeighState.DELAY and n.expires == t + 1 + DELAY_FIRST_PROBE_TIME
    probe, _ = c.expire(t + 1 + DELAY_FIRST_PROBE_TIME)
    assert probe == [n] and n.state is NeighState.PROBE
    ns = nd.solicit(n, t)
    assert (ns.src, ns.dst, ns.mac) == (OWN, PEER, PEER_MAC)   # unicast while probing
    now = t + 6
    for _ in range(MAX_UNICAST_SOLICIT - 1):
        now += c.retrans_time
        assert c.expire(now) == ([n], [])
    now += c.retrans_time
    assert c.expire(now) == ([], [n]) and c.get(iface, PEER) is None


def test_pending_frames_flushed_when_na_resolves():
    iface, table, nd = make()
    assigned(iface, table)
    n = nd.cache.start_resolution(iface, PEER, T0)
    n.pending.append(object())  # type: ignore[arg-type]
    fx = nd.advertisement(iface, na_msg(PEER, PEER_MAC, s=False), T0)
    assert fx.resolved == [n] and n.state is NeighState.STALE


def test_na_without_target_lladdr_leaves_incomplete():
    iface, table, nd = make()
    n = nd.cache.start_resolution(iface, PEER, T0)
    nd.advertisement(iface, na_msg(PEER, None, s=True), T0)
    assert n.state is NeighState.INCOMPLETE and n.mac is None


def test_unsolicited_na_creates_no_entry():
    iface, table, nd = make()
    fx = nd.advertisement(iface, na_msg(PEER, PEER_MAC, s=False, o=True), T0)
    assert fx.send == [] and fx.resolved == [] and len(nd.cache) == 0


def test_na_override_rules():
    iface, table, nd = make()
    c = nd.cache
    n = c.record(iface, PEER, PEER_MAC, T0)
    c.advertisement(iface, na_msg(PEER, PEER_MAC, s=True), T0)
    assert n.state is NeighState.REACHABLE
    # Another address without Override: not taken, and the entry is doubted.
    c.advertisement(iface, na_msg(PEER, OTHER_MAC, s=True, o=False), T0 + 1)
    assert (n.mac, n.state) == (PEER_MAC, NeighState.STALE)
    # With Override, unsolicited: taken, STALE.
    c.advertisement(iface, na_msg(PEER, OTHER_MAC, s=False, o=True, r=True), T0 + 2)
    assert (n.mac, n.state, n.is_router) == (OTHER_MAC, NeighState.STALE, True)
    # Same address, solicited: REACHABLE.
    c.advertisement(iface, na_msg(PEER, OTHER_MAC, s=True, o=False), T0 + 3)
    assert n.state is NeighState.REACHABLE and not n.is_router


def test_cache_is_bounded():
    iface, table, nd = make()
    nd.cache.max_entries = 2
    for i in range(2):
        nd.cache.start_resolution(iface, PEER[:15] + bytes([i]), T0)
    assert nd.cache.record(iface, PEER[:15] + b"\x09", PEER_MAC, T0) is None
    assert nd.cache.start_resolution(iface, PEER[:15] + b"\x08", T0) is None
    assert len(nd.cache) == 2


def test_multicast_solicitation_while_incomplete():
    iface, table, nd = make()
    ll = table.add_link_local(iface, T0)
    ll.state = AddrState.PREFERRED
    n = nd.cache.start_resolution(iface, PEER, T0)
    t = nd.solicit(n, T0)
    group = solicited_node(PEER)
    assert (t.src, t.dst, t.mac) == (ll.addr, group, multicast_mac(group))
    assert bytes(t.message.payload) == PEER + b"\x01\x01" + iface.mac
    assert nd.solicit(nd.cache.start_resolution(iface, ROUTER, T0), T0).src == ll.addr


# -- answering solicitations ----------------------------------------------------------
def test_ns_for_own_address_answered_and_sender_learnt():
    iface, table, nd = make()
    assigned(iface, table)
    ns = NeighborSolicitation(OWN, NdpOptions(source_lladdr=PEER_MAC))
    fx = nd.solicitation(iface, PEER, solicited_node(OWN), ns, T0)
    (t,) = fx.send
    assert (t.iface, t.src, t.dst, t.mac) == (iface, OWN, PEER, PEER_MAC)
    assert (t.message.type, t.message.rest) == (icmp6.NEIGHBOR_ADVERTISEMENT,
                                                ndp.NA_SOLICITED | ndp.NA_OVERRIDE)
    assert bytes(t.message.payload) == OWN + b"\x02\x01" + iface.mac
    n = nd.cache.get(iface, PEER)
    assert (n.mac, n.state) == (PEER_MAC, NeighState.STALE)


def test_router_sets_the_router_flag():
    iface, table, nd = make(router=True)
    assigned(iface, table)
    ns = NeighborSolicitation(OWN, NdpOptions(source_lladdr=PEER_MAC))
    (t,) = nd.solicitation(iface, PEER, solicited_node(OWN), ns, T0).send
    assert t.message.rest == ndp.NA_ROUTER | ndp.NA_SOLICITED | ndp.NA_OVERRIDE


def test_ns_for_other_or_duplicate_address_ignored():
    iface, table, nd = make()
    a = assigned(iface, table)
    ns = NeighborSolicitation(PEER, NdpOptions(source_lladdr=PEER_MAC))
    fx = nd.solicitation(iface, OTHER, solicited_node(PEER), ns, T0)
    assert fx.send == [] and len(nd.cache) == 0
    a.state = AddrState.DUPLICATE
    ns = NeighborSolicitation(OWN, NdpOptions(source_lladdr=PEER_MAC))
    assert nd.solicitation(iface, PEER, solicited_node(OWN), ns, T0).send == []


OTHER = ip6_bytes("2001:2:0:1::99")


def test_multicast_ns_without_lladdr_not_answered_unicast_one_is():
    iface, table, nd = make()
    assigned(iface, table)
    ns = NeighborSolicitation(OWN)
    assert nd.solicitation(iface, PEER, solicited_node(OWN), ns, T0).send == []
    (t,) = nd.solicitation(iface, PEER, OWN, ns, T0).send
    assert (t.dst, t.mac) == (PEER, None)


def test_dad_probe_for_assigned_address_answered_to_all_nodes():
    iface, table, nd = make()
    assigned(iface, table)
    fx = nd.solicitation(iface, UNSPECIFIED, solicited_node(OWN), NeighborSolicitation(OWN), T0)
    (t,) = fx.send
    assert (t.src, t.dst, t.mac) == (OWN, ALL_NODES, multicast_mac(ALL_NODES))
    assert t.message.rest == ndp.NA_OVERRIDE       # not solicited
    assert len(nd.cache) == 0


# -- DAD ------------------------------------------------------------------------------
def test_dad_passes_after_one_probe_and_retrans_time():
    iface, table, nd = make()
    a = table.add(iface, OWN, 64, T0)
    assert a.state is AddrState.TENTATIVE and table.assigned(OWN) is None
    fx = nd.on_timer(T0)
    (t,) = fx.send
    group = solicited_node(OWN)
    assert t == NdpTransmit(iface, UNSPECIFIED, group, multicast_mac(group), t.message)
    assert bytes(t.message.to_bytes(UNSPECIFIED, group))[8:] == OWN   # no options
    assert nd.next_deadline() == T0 + 1.0
    assert nd.on_timer(T0 + 0.5).send == [] and a.state is AddrState.TENTATIVE
    nd.on_timer(T0 + 1.0)
    assert a.state is AddrState.PREFERRED and table.assigned(OWN) is a


def test_dad_random_delay_is_bounded():
    iface, table, nd = make()
    table.dad_delay = 1.0
    a = table.add(iface, OWN, 64, T0)
    assert T0 <= a.next_event <= T0 + 1.0


def test_tentative_address_is_not_answered_for():
    iface, table, nd = make()
    table.add(iface, OWN, 64, T0)
    ns = NeighborSolicitation(OWN, NdpOptions(source_lladdr=PEER_MAC))
    fx = nd.solicitation(iface, PEER, solicited_node(OWN), ns, T0)
    assert fx.send == [] and fx.duplicates == [] and len(nd.cache) == 0


@pytest.mark.parametrize("how", ["ns", "na"])
def test_duplicate_static_address_is_never_used(how):
    iface, table, nd = make()
    a = table.add(iface, OWN, 64, T0)
    nd.on_timer(T0)
    if how == "ns":
        fx = nd.solicitation(iface, UNSPECIFIED, solicited_node(OWN),
                             NeighborSolicitation(OWN), T0 + 0.5)
    else:
        fx = nd.advertisement(iface, na_msg(OWN, PEER_MAC), T0 + 0.5)
    assert fx.duplicates == [a] and a.state is AddrState.DUPLICATE
    nd.on_timer(T0 + 5)
    assert table.assigned(OWN) is None and a.state is AddrState.DUPLICATE
    assert nd.next_deadline() is None


def test_duplicate_generated_address_retries_with_the_next_counter():
    iface, table, nd = make()
    ll = table.add_link_local(iface, T0)
    assert is_link_local(ll.addr) and ll.addr[8:] == stable_iid(SECRET, "eth0", ll.addr, 0)
    fx = nd.advertisement(iface, na_msg(ll.addr, PEER_MAC), T0)
    assert fx.duplicates == [ll]
    (retry,) = table.for_iface(iface)
    assert retry.dad_counter == 1 and retry.addr[8:] == stable_iid(SECRET, "eth0",
                                                                   ll.addr, 1)
    assert retry.addr != ll.addr and retry.state is AddrState.TENTATIVE
    for _ in range(3):
        (cur,) = table.for_iface(iface)
        nd.advertisement(iface, na_msg(cur.addr, PEER_MAC), T0)
    (last,) = table.for_iface(iface)
    assert last.dad_counter == 3 and last.state is AddrState.DUPLICATE


def test_stable_iid_is_stable_and_depends_on_every_input():
    p = ip6_bytes("2001:2:0:1::")
    base = stable_iid(SECRET, "eth0", p)
    assert base == stable_iid(SECRET, "eth0", p) and len(base) == 8
    assert base != stable_iid(SECRET, "eth1", p)
    assert base != stable_iid(SECRET, "eth0", ip6_bytes("2001:2:0:2::"))
    assert base != stable_iid(bytes(32), "eth0", p)
    assert base != stable_iid(SECRET, "eth0", p, 1)


def test_address_table_bounds_and_refusals():
    iface, table, nd = make(max_per_iface=2)
    table.add(iface, OWN, 64, T0)
    with pytest.raises(ValueError):
        table.add(iface, OWN, 64, T0)
    table.add(iface, PEER, 64, T0)
    with pytest.raises(ValueError):
        table.add(iface, OTHER, 64, T0)
    iface2 = Interface(1, "eth1", PEER_MAC, b"\0\0\0\0", 32)
    for bad in (ALL_NODES, UNSPECIFIED):
        with pytest.raises(ValueError):
            table.add(iface2, bad, 64, T0)


# -- router advertisements and SLAAC ----------------------------------------------------
PREFIX = ip6_bytes("2001:2:0:1::")


def ra(*pis, lifetime=1800, mac=PEER_MAC, mtu=None, reachable=0, retrans=0, hl=0):
    return ndp.RouterAdvertisement(hl, False, False, lifetime, reachable, retrans,
                                   NdpOptions(source_lladdr=mac, prefixes=pis, mtu=mtu))


def test_ra_sets_router_entry_link_params_and_slaac_address():
    iface, table, nd = make()
    table.autoconf.add(iface.index)
    pi = ndp.PrefixInformation(PREFIX, 64, True, True, 86400, 14400)
    nd.router_advertisement(iface, ROUTER, ra(pi, mtu=1400, reachable=20000, retrans=2000,
                                              hl=32), T0)
    n = nd.cache.get(iface, ROUTER)
    assert (n.mac, n.state, n.is_router) == (PEER_MAC, NeighState.STALE, True)
    link = table.link(iface)
    assert (link.cur_hop_limit, link.mtu, link.retrans_time) == (32, 1400, 2.0)
    assert nd.cache.base_reachable_time == 20.0 and 10 <= nd.cache.reachable_time < 30
    assert link.routers == {ROUTER: T0 + 1800} and link.prefixes == {(PREFIX, 64): T0 + 86400}
    (a,) = table.for_iface(iface)
    assert a.origin is AddrOrigin.SLAAC and a.addr == PREFIX[:8] + stable_iid(
        SECRET, "eth0", PREFIX)
    assert (a.state, a.preferred_until, a.valid_until) == (AddrState.TENTATIVE,
                                                           T0 + 14400, T0 + 86400)
    nd.on_timer(T0)
    nd.on_timer(T0 + 2.0)
    assert a.state is AddrState.PREFERRED
    nd.on_timer(T0 + 14400)
    assert a.state is AddrState.DEPRECATED and table.assigned(a.addr) is a
    nd.on_timer(T0 + 86400)
    assert table.lookup(a.addr) is None and link.prefixes == {} and link.routers == {}


def test_slaac_ignores_what_rfc_4862_ignores():
    iface, table, nd = make()
    table.autoconf.add(iface.index)
    bad = [ndp.PrefixInformation(PREFIX, 64, True, False, 100, 50),       # A flag clear
           ndp.PrefixInformation(ip6_bytes("fe80::"), 64, True, True, 100, 50),
           ndp.PrefixInformation(PREFIX, 64, True, True, 50, 100),        # preferred > valid
           ndp.PrefixInformation(PREFIX, 48, True, True, 100, 50),        # not /64
           ndp.PrefixInformation(PREFIX, 64, True, True, 0, 0)]           # valid 0
    nd.router_advertisement(iface, ROUTER, ra(*bad, mtu=1000), T0)
    assert table.for_iface(iface) == [] and table.link(iface).mtu is None


def test_no_slaac_without_autoconf():
    iface, table, nd = make()
    pi = ndp.PrefixInformation(PREFIX, 64, True, True, 100, 50)
    nd.router_advertisement(iface, ROUTER, ra(pi), T0)
    assert table.for_iface(iface) == [] and (PREFIX, 64) in table.link(iface).prefixes


def test_slaac_two_hour_rule():
    iface, table, nd = make()
    table.autoconf.add(iface.index)
    nd.router_advertisement(iface, ROUTER, ra(ndp.PrefixInformation(
        PREFIX, 64, True, True, 86400, 3600)), T0)
    (a,) = table.for_iface(iface)
    # A forged short lifetime is cut to two hours, not taken.
    nd.router_advertisement(iface, ROUTER, ra(ndp.PrefixInformation(
        PREFIX, 64, True, True, 10, 5)), T0 + 1)
    assert (a.valid_until, a.preferred_until) == (T0 + 1 + 7200, T0 + 6)
    # A longer one than two hours is taken.
    nd.router_advertisement(iface, ROUTER, ra(ndp.PrefixInformation(
        PREFIX, 64, True, True, 9000, 9000)), T0 + 2)
    assert a.valid_until == T0 + 9002
    assert len(table.for_iface(iface)) == 1


def test_router_lifetime_zero_removes_router_and_tables_are_bounded():
    iface, table, nd = make(max_routers=1)
    nd.router_advertisement(iface, ROUTER, ra(), T0)
    nd.router_advertisement(iface, ip6_bytes("fe80::2"), ra(mac=OTHER_MAC), T0)
    assert list(table.link(iface).routers) == [ROUTER]
    nd.router_advertisement(iface, ROUTER, ra(lifetime=0), T0)
    assert table.link(iface).routers == {}


def test_router_solicitation_after_link_local_on_autoconf_interface():
    iface, table, nd = make()
    table.autoconf.add(iface.index)
    ll = table.add_link_local(iface, T0)
    nd.on_timer(T0)
    (rs,) = nd.on_timer(T0 + 1).send
    assert (rs.src, rs.dst, rs.mac) == (ll.addr, ALL_ROUTERS, multicast_mac(ALL_ROUTERS))
    assert (rs.message.type, bytes(rs.message.payload)) == (133, b"\x01\x01" + iface.mac)
    assert nd.router_solicitation(Interface(1, "x", PEER_MAC, b"\0" * 4, 32)).src == (
        UNSPECIFIED)


def test_a_router_takes_nothing_from_other_routers_advertisements():
    iface, table, nd = make(router=True)
    table.autoconf.add(iface.index)
    pi = ndp.PrefixInformation(PREFIX, 64, True, True, 100, 50)
    fx = nd.router_advertisement(iface, ROUTER, ra(pi, hl=9), T0)
    assert fx.send == [] and table.for_iface(iface) == [] and len(nd.cache) == 0
    assert table.link(iface).cur_hop_limit == 64 and table.link(iface).routers == {}


def test_router_that_stops_being_one_leaves_the_default_router_list():
    iface, table, nd = make()
    nd.router_advertisement(iface, ROUTER, ra(), T0)
    assert ROUTER in table.link(iface).routers
    nd.advertisement(iface, na_msg(ROUTER, PEER_MAC, s=True, r=True), T0 + 1)
    assert ROUTER in table.link(iface).routers
    nd.advertisement(iface, na_msg(ROUTER, PEER_MAC, s=True, r=False), T0 + 2)
    assert table.link(iface).routers == {} and not nd.cache.get(iface, ROUTER).is_router


def test_router_solicitations_repeat_until_a_router_speaks():
    iface, table, nd = make()
    table.autoconf.add(iface.index)
    table.add_link_local(iface, T0)
    nd.on_timer(T0)
    assert [t.message.type for t in nd.on_timer(T0 + 1).send] == [133]
    assert nd.next_deadline() == T0 + 5
    assert [t.message.type for t in nd.on_timer(T0 + 5).send] == [133]
    assert [t.message.type for t in nd.on_timer(T0 + 9).send] == [133]
    assert nd.on_timer(T0 + 13).send == [] and nd.next_deadline() is None
    # A second interface hears a router after its first solicitation: no more.
    iface2 = Interface(1, "eth1", PEER_MAC, b"\0\0\0\0", 32)
    table.autoconf.add(iface2.index)
    table.add_link_local(iface2, T0)
    nd.on_timer(T0 + 20)
    assert len(nd.on_timer(T0 + 21).send) == 1
    nd.router_advertisement(iface2, ROUTER, ra(), T0 + 22)
    assert nd.on_timer(T0 + 25).send == []
