"""IPv6 on the command line: --addr with IPv6 addresses after the IPv4 one (or
"auto"), --route with IPv6 prefixes, the lab's attachments with both families, and
TapStack's IPv6 configuration as the core sees it."""

from __future__ import annotations

import argparse

import pytest

from apps.lab import LabConfig
from apps.stackcmd import add_common, attachments_from, lab_attachments
from stack.addrconf import AddrOrigin
from stack.aio import Attachment
from stack.sim import SimNetwork
from stack.wire.ipv6 import ip6_bytes


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_common(p)
    return p.parse_args(list(argv))


def test_addr_takes_ipv6_addresses_after_commas() -> None:
    args = parse("--tap", "t0", "--tap", "t1", "--tap", "t2",
                 "--addr", "198.18.0.2/24,2001:2:0:1::2/64,2001:2:0:1::3/64",
                 "--addr", "198.19.0.2/24", "--addr", "auto",
                 "--route", "2001:2:0:9::/64=2001:2:0:1::1")
    assert attachments_from(args) == [
        Attachment("t0", "198.18.0.2/24", addr6=("2001:2:0:1::2/64", "2001:2:0:1::3/64")),
        Attachment("t1", "198.19.0.2/24"),
        Attachment("t2", "0.0.0.0/32", addr6=("auto",))]
    assert args.route == [("2001:2:0:9::/64", "2001:2:0:1::1")]


@pytest.mark.parametrize("addr", ["198.18.0.2/24,198.18.0.3/24", "2001:2::zz/64", ","])
def test_bad_addr_lists_are_usage_errors(addr: str) -> None:
    with pytest.raises(SystemExit):
        attachments_from(parse("--tap", "t0", "--addr", addr))


def test_the_tap_lab_attaches_both_families() -> None:
    cfg = LabConfig.unique("six")
    got = lab_attachments(cfg)
    assert [(a.addr, a.addr6) for a in got] == [
        ("198.18.0.2/24", ("2001:2:0:1::2/64",)), ("198.19.0.2/24", ("2001:2:0:2::2/64",))]


def test_configure_and_ipv6_routes_as_tapstack_gives_them() -> None:
    net = SimNetwork(seed=2)
    s = net.add_host("s")
    net.add_probe(s, "198.18.0.2/24")
    iface = s.interfaces[0]
    s.ip6.configure(iface, ("2001:2:0:1::2/64", "auto"), net.now)
    s.ip6.add_route("2001:2:0:9::/64", "2001:2:0:1::1")
    origins = sorted(a.origin.value for a in s.ip6.addresses.for_iface(iface))
    assert origins == [AddrOrigin.LINK_LOCAL.value, AddrOrigin.STATIC.value]
    assert iface.index in s.ip6.addresses.autoconf
    net.run(3.0)
    hop = s.ip6.routes.lookup(ip6_bytes("2001:2:0:9::5"))
    assert hop is not None and hop.nexthop == ip6_bytes("2001:2:0:1::1")
    route = s.route(ip6_bytes("2001:2:0:9::5"))
    assert route is not None and route.src == ip6_bytes("2001:2:0:1::2")
    assert s.route(ip6_bytes("2001:2:0:7::5")) is None      # no default router yet
    with pytest.raises(ValueError):
        s.ip6.add_route("2001:2:0:8::/64", "2001:2:0:5::1")  # no interface holds it


def test_source_selection_prefers_scope_then_preferred_then_longest_match() -> None:
    from stack.addrconf import AddrState

    net = SimNetwork(seed=2)
    s = net.add_host("s")
    net.add_probe(s, "198.18.0.2/24")
    iface = s.interfaces[0]
    s.ip6.configure(iface, ("2001:2:0:1::2/64", "2001:2:0:1::8000/64"), net.now)
    net.run(3.0)
    src = s.ip6.routes.source
    assert src(iface, ip6_bytes("2001:2:0:1::1")).addr == ip6_bytes("2001:2:0:1::2")
    assert src(iface, ip6_bytes("2001:2:0:1::8001")).addr == ip6_bytes("2001:2:0:1::8000")
    assert src(iface, ip6_bytes("fe80::9")).addr[:2] == b"\xfe\x80"     # same scope
    s.ip6.addresses.lookup(ip6_bytes("2001:2:0:1::8000")).state = AddrState.DEPRECATED
    assert src(iface, ip6_bytes("2001:2:0:1::8001")).addr == ip6_bytes("2001:2:0:1::2")
