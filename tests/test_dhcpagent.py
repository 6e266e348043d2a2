"""The DHCP agent (stack/dhcpagent.py) on the simulator: a fake DHCP server built with
dpkt on the other host, virtual time for T1 and expiry."""

from __future__ import annotations

import random
from types import SimpleNamespace

import dpkt
import dpkt.dhcp as dd
import pytest

from stack.core import Stack
from stack.dhcp import DhcpState
from stack.dhcpagent import DhcpAgent
from stack.sim import Probe, SimNetwork
from stack.udp import IPPROTO_UDP, UdpLayer
from stack.wire.ipv4 import ip_bytes, ip_str

SERVER = "198.19.0.1"
LEASED = "198.19.0.50"
LEASE_TIME = 120


def _udp(stack: Stack) -> UdpLayer:
    layer = UdpLayer(stack, rng=stack.rng)
    stack.register_protocol(IPPROTO_UDP, layer)
    return layer


class FakeServer:
    """A DHCP server on a raw port of the simulator, built with dpkt: answers ARP for
    its address, DISCOVER with OFFER and REQUEST with ACK (RFC 2131 §4.3.1, §4.3.2),
    broadcast while the client has no address, unicast to ciaddr when it has one."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.seen: list[tuple[int, str, bytes]] = []   # (type, source address, ciaddr)
        self.answer = True

    def poll(self) -> bool:
        """Answer every frame the client sent since the last call; always False."""
        for frame in self.probe.take():
            eth = dpkt.ethernet.Ethernet(frame)
            if isinstance(eth.data, dpkt.arp.ARP):
                self._arp(eth.data)
            elif isinstance(eth.data, dpkt.ip.IP) and isinstance(eth.data.data, dpkt.udp.UDP):
                ipp = eth.data
                if ipp.data.dport == 67:
                    self._dhcp(dd.DHCP(bytes(ipp.data.data)), ipp.src)
        return False

    def _arp(self, req: dpkt.arp.ARP) -> None:
        if req.op != dpkt.arp.ARP_OP_REQUEST or req.tpa != ip_bytes(SERVER):
            return
        rep = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REPLY, sha=self.probe.mac, spa=req.tpa,
                           tha=req.sha, tpa=req.spa)
        self.probe.send(bytes(dpkt.ethernet.Ethernet(dst=req.sha, src=self.probe.mac,
                                                     type=dpkt.ethernet.ETH_TYPE_ARP,
                                                     data=rep)))

    def _dhcp(self, pkt: dd.DHCP, src: bytes) -> None:
        mtype = dict(pkt.opts)[dd.DHCP_OPT_MSGTYPE][0]
        self.seen.append((mtype, ip_str(src), pkt.ciaddr.to_bytes(4, "big")))
        if not self.answer:
            return
        if mtype == dd.DHCPDISCOVER:
            self._reply(pkt, dd.DHCPOFFER)
        elif mtype == dd.DHCPREQUEST:
            self._reply(pkt, dd.DHCPACK)

    def _reply(self, req: dd.DHCP, mtype: int) -> None:
        opts = [(dd.DHCP_OPT_MSGTYPE, bytes([mtype])),
                (dd.DHCP_OPT_SERVER_ID, ip_bytes(SERVER)),
                (dd.DHCP_OPT_NETMASK, bytes([255, 255, 255, 0])),
                (dd.DHCP_OPT_ROUTER, ip_bytes(SERVER)),
                (dd.DHCP_OPT_DNS_SVRS, ip_bytes(SERVER) + ip_bytes("198.19.0.2")),
                (dd.DHCP_OPT_LEASE_SEC, LEASE_TIME.to_bytes(4, "big"))]
        pkt = bytes(dd.DHCP(op=dd.DHCP_OP_REPLY, xid=req.xid, chaddr=req.chaddr,
                            yiaddr=int.from_bytes(ip_bytes(LEASED), "big"),
                            ciaddr=req.ciaddr, flags=req.flags, opts=opts))
        unicast = bool(req.ciaddr)
        dst = req.ciaddr.to_bytes(4, "big") if unicast else b"\xff" * 4
        u = dpkt.udp.UDP(sport=67, dport=68, ulen=8 + len(pkt), data=pkt)
        ipp = dpkt.ip.IP(src=ip_bytes(SERVER), dst=dst, p=IPPROTO_UDP, ttl=64,
                         len=20 + len(u), data=u)
        mac = req.chaddr[:6] if unicast else b"\xff" * 6
        self.probe.send(bytes(dpkt.ethernet.Ethernet(dst=mac, src=self.probe.mac,
                                                     type=dpkt.ethernet.ETH_TYPE_IP,
                                                     data=ipp)))


class FakeNet:
    """What the agent reads of a TapStack: its stack, resolver, configure_resolver."""

    def __init__(self, stack: Stack, servers: list[tuple[str, int]] | None = None) -> None:
        self.stack = stack
        self.resolver = None if servers is None else SimpleNamespace(servers=servers)

    def configure_resolver(self, servers: list[tuple[str, int]]) -> SimpleNamespace:
        self.resolver = SimpleNamespace(servers=list(servers))
        return self.resolver


def _setup(dns: list[tuple[str, int]] | None = None):
    net = SimNetwork(3)
    cli = net.add_host("cli")
    server = FakeServer(net.add_probe(cli, "0.0.0.0/32"))
    fake = FakeNet(cli, dns)
    events: list[object] = []
    agent = DhcpAgent(fake, cli.interfaces[0], _udp(cli), random.Random(5), events.append,
                      clock=lambda: net.now, poke=net.flush)
    cli.timer_sources.append(agent)
    net.start()
    agent.start()
    return net, cli, server, fake, agent, events


def _bound(agent: DhcpAgent) -> bool:
    return agent.client.state is DhcpState.BOUND


def until(net: SimNetwork, server: FakeServer, pred, timeout: float) -> bool:
    """Run the network, the fake server answering, until ``pred()`` or ``timeout``."""
    return net.run_until(lambda: server.poll() or pred(), timeout)


def run(net: SimNetwork, server: FakeServer, duration: float) -> None:
    """Run the network for ``duration`` virtual seconds, the fake server answering."""
    until(net, server, lambda: False, duration)


def test_bound_sets_address_default_route_and_dns():
    net, cli, server, fake, agent, _ev = _setup()
    iface = cli.interfaces[0]
    assert not iface.configured
    assert until(net, server, lambda: _bound(agent), 10)
    assert iface.addr == ip_bytes(LEASED) and iface.prefixlen == 24
    assert cli.by_addr[ip_bytes(LEASED)] is iface
    route = cli.routes.lookup(ip_bytes("203.0.113.9"))   # off-link: the default route
    assert route is not None and route.via == ip_bytes(SERVER)
    assert fake.resolver.servers == [(SERVER, 53), ("198.19.0.2", 53)]
    # The exchange was broadcast from 0.0.0.0 (RFC 2131 §4.1).
    assert [(t, s) for t, s, _c in server.seen] == [(dd.DHCPDISCOVER, "0.0.0.0"),
                                                    (dd.DHCPREQUEST, "0.0.0.0")]
    assert agent.summary()["counters"]["bound"] == 1


def test_explicit_dns_wins():
    net, _cli, server, fake, agent, _ev = _setup([("192.0.2.53", 53)])
    assert until(net, server, lambda: _bound(agent), 10)
    assert fake.resolver.servers == [("192.0.2.53", 53)]
    assert agent.counters["dns_kept"] == 1


def test_renews_unicast_at_t1_from_the_leased_address():
    net, cli, server, _fake, agent, events = _setup()
    assert until(net, server, lambda: _bound(agent), 10)
    bound_at = net.now
    n = len(server.seen)
    run(net, server, LEASE_TIME / 2 - 2)      # just before T1: nothing sent
    assert len(server.seen) == n
    run(net, server, 4)                       # T1 passed: a unicast REQUEST, ACKed
    assert len(server.seen) == n + 1
    mtype, src, ciaddr = server.seen[-1]
    assert (mtype, src, ciaddr) == (dd.DHCPREQUEST, LEASED, ip_bytes(LEASED))
    assert type(events[-1]).__name__ == "Renewed"
    assert agent.client.lease is not None and agent.client.lease.obtained > bound_at
    assert cli.interfaces[0].addr == ip_bytes(LEASED)


def test_expiry_clears_address_and_route_then_discovers_again():
    net, cli, server, fake, agent, events = _setup()
    assert until(net, server, lambda: _bound(agent), 10)
    server.answer = False
    run(net, server, LEASE_TIME + 1)
    iface = cli.interfaces[0]
    assert not iface.configured
    assert cli.routes.lookup(ip_bytes("203.0.113.9")) is None
    assert fake.resolver.servers == []
    assert type(events[-1]).__name__ == "Lost" and events[-1].reason == "expired"
    # After expiry the DISCOVER goes from 0.0.0.0 again, not from the lost address.
    assert server.seen[-1][:2] == (dd.DHCPDISCOVER, "0.0.0.0")
    server.answer = True
    assert until(net, server, lambda: _bound(agent), 120)
    assert iface.addr == ip_bytes(LEASED)


def test_stop_sends_release_before_the_address_goes():
    net, cli, server, _fake, agent, _ev = _setup()
    assert until(net, server, lambda: _bound(agent), 10)
    agent.stop()
    run(net, server, 1)
    assert server.seen[-1][:2] == (dd.DHCPRELEASE, LEASED)
    assert not cli.interfaces[0].configured
    assert agent not in cli.timer_sources
    assert agent.next_deadline() is None


def test_dhcp_is_refused_with_workers_and_on_two_interfaces():
    from stack.aio import Attachment, _check_dhcp

    class Seat:   # what _check_dhcp reads of a worker's seat: that there is one
        pass

    with pytest.raises(ValueError, match="single process"):
        _check_dhcp([Attachment("t0", "dhcp")], Seat())   # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one interface"):
        _check_dhcp([Attachment("t0", "dhcp"), Attachment("t1", "dhcp")], None)
    _check_dhcp([Attachment("t0", "dhcp"), Attachment("t1", "10.0.0.1/24")], None)
