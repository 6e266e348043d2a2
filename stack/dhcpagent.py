"""The DHCP agent: runs the sans-I/O client (stack/dhcp.py) for one interface of a stack.

The agent owns the UDP socket on port 68 of that interface, feeds what arrives there
to the client, sends what the client queues and applies the client's events to the
stack: Bound sets the address, the default route through the router and the DNS
servers; Renewed changes nothing but the log; Lost takes the address (and with it
every route out of the interface) away. It is a timer source of the core
(``stack.timer_sources``): the client's retransmissions, T1, T2 and expiry run from
the stack's own timer.

Decisions, for the integrator and the operator:

- DNS servers from the lease are used only when no servers were configured otherwise
  (``--dns`` wins): the agent fills an absent or empty resolver, and replaces only
  the servers it put there itself. Losing the lease empties the servers it set.
- Ordering of sends and events (RFC 2131 §4.4.6, §4.1): a datagram sent from the
  leased address (DHCPRELEASE, a renewing or rebinding REQUEST) goes out before a
  Lost event takes the address away; one sent from 0.0.0.0 (a DISCOVER after the
  lease ended) goes out after, so that its source really is 0.0.0.0.
- The UDP layer picks the source address; the agent checks it is the one the client
  asked for and drops (counts ``dhcp_src_mismatch``) a datagram whose source would
  differ, rather than send it from the wrong address.
- The ARP probe of an offered address (RFC 2131 §4.4.1) is not done.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Callable
from typing import Any

from stack.core import Stack
from stack.dhcp import (
    BROADCAST,
    CLIENT_PORT,
    SERVER_PORT,
    ZERO,
    Bound,
    DhcpClient,
    DhcpEvent,
    DhcpSend,
    Lease,
    Lost,
    Renewed,
)
from stack.iface import Interface
from stack.udp import ANY, UdpError, UdpLayer, UdpSocket
from stack.wire.ipv4 import ip_str

log = logging.getLogger("tapsplice.dhcp")

#: The DNS port of the servers a lease names (RFC 1035 §4.2).
DNS_PORT = 53


def describe(iface: Interface, lease: Lease) -> str:
    """``<iface> bound A.B.C.D/N router R dns D lease Ns``: the log line of a lease."""
    router = ip_str(lease.router) if lease.router is not None else "none"
    dns = ",".join(ip_str(d) for d in lease.dns) or "none"
    return (f"{iface.name} bound {ip_str(lease.addr)}/{lease.prefixlen} router {router} "
            f"dns {dns} lease {lease.lease_time:g}s")


class DhcpAgent:
    """The DHCP client of interface ``iface`` of a stack, wired to the stack.

    ``net_or_stack``: a TapStack (its ``stack``, ``driver`` and resolver are used) or
    a bare :class:`Stack` (then give ``clock``, and ``poke`` if output must be
    flushed after calls from outside the stack's own event handling).
    """

    def __init__(self, net_or_stack: Any, iface: Interface, udp_layer: UdpLayer,
                 rng: random.Random, on_change: Callable[[DhcpEvent], None] | None = None,
                 *, clock: Callable[[], float] | None = None,
                 poke: Callable[[], None] | None = None, hostname: str | None = None) -> None:
        self.net = net_or_stack
        self.stack: Stack = (net_or_stack if isinstance(net_or_stack, Stack)
                             else net_or_stack.stack)
        driver = getattr(net_or_stack, "driver", None)
        if clock is None:
            if driver is None:
                raise ValueError("a bare Stack needs a clock")
            clock = driver.now
        if poke is None and driver is not None:
            poke = driver.poke
        self.clock = clock
        self.poke = poke
        self.iface = iface
        self.udp = udp_layer
        self.on_change = on_change
        self.client = DhcpClient(iface.mac, rng, hostname=hostname)
        self.counters: collections.Counter[str] = collections.Counter()
        self.sock: UdpSocket | None = None
        #: The DNS servers this agent gave the resolver (None: it gave none).
        self._dns_set: list[tuple[str, int]] | None = None

    # -------------------------------------------------------- lifecycle

    def start(self, now: float | None = None) -> None:
        """Open port 68 on the interface and broadcast the first DISCOVER (RFC 2131 §4.4.1)."""
        if self.sock is not None:
            raise RuntimeError("the DHCP agent is running")
        # RFC 2131 §4.1: replies may be broadcast to 255.255.255.255 while the client
        # has no address; the socket takes broadcasts on this interface only.
        self.sock = sock = self.udp.bind(ANY, CLIENT_PORT, broadcast=True,
                                         iface=self.iface.index)
        sock.on_readable = self._on_readable
        self.client.start(self.clock() if now is None else now)
        self._pump()

    def stop(self, now: float | None = None) -> None:
        """Give the lease back (DHCPRELEASE, RFC 2131 §4.4.6) and close the socket."""
        if self.sock is None:
            return
        self.client.release(self.clock() if now is None else now)
        self._pump()
        self.udp.close(self.sock)
        self.sock = None
        if self in self.stack.timer_sources:
            self.stack.timer_sources.remove(self)

    def release(self, now: float | None = None) -> None:
        """Same as :meth:`stop`: the name of the client's entry point."""
        self.stop(now)

    # -------------------------------------------------------- TimerSource

    def next_deadline(self) -> float | None:
        """The client's next retransmission, T1, T2 or expiry."""
        return self.client.next_deadline() if self.sock is not None else None

    def on_timer(self, now: float) -> None:
        """Run the client's due timer (RFC 2131 §4.4.5), then send and apply."""
        if self.sock is None:
            return
        self.client.on_timer(now)
        self._pump(flush=False)  # the core's caller flushes after its timers

    # -------------------------------------------------------- receive, send, apply

    def _on_readable(self, sock: UdpSocket) -> None:
        now = self.clock()
        while (item := sock.pop()) is not None:
            self.counters["rx"] += 1
            self.client.receive(item[0], now)
        self._pump(flush=False)  # called inside the stack's batch: the driver flushes

    def _pump(self, flush: bool = True) -> None:
        """Send what the client queued and apply what happened, in the order the
        sources of the datagrams need (see the module docstring)."""
        sends = self.client.drain()
        for s in sends:
            if s.src != ZERO:
                self._send(s)
        while self.client.events:
            self._apply(self.client.events.popleft())
        for s in sends:
            if s.src == ZERO:
                self._send(s)
        if flush and self.poke is not None:
            self.poke()

    def _source_for(self, dst: bytes) -> bytes | None:
        """The source address the UDP layer will give a datagram from our socket."""
        if dst == BROADCAST:
            return self.iface.addr
        route = self.stack.route(dst)
        return None if route is None else route.src

    def _send(self, s: DhcpSend) -> None:
        assert self.sock is not None
        if self._source_for(s.dst) != s.src:
            self.counters["dhcp_src_mismatch"] += 1
            log.debug("dhcp: %s: not sending to %s from %s: the stack would use another "
                      "source", self.iface.name, ip_str(s.dst), ip_str(s.src))
            return
        try:
            self.udp.sendto(self.sock, s.payload, (s.dst, SERVER_PORT), self.clock())
        except UdpError as e:
            self.counters["tx_error"] += 1
            log.debug("dhcp: %s: send to %s: %s", self.iface.name, ip_str(s.dst), e)
            return
        self.counters["tx"] += 1

    def _apply(self, ev: DhcpEvent) -> None:
        if isinstance(ev, Bound):
            self._bound(ev.lease)
        elif isinstance(ev, Renewed):
            self.counters["renewed"] += 1
            log.info("dhcp: %s renewed %s lease %gs", self.iface.name,
                     ip_str(ev.lease.addr), ev.lease.lease_time)
        elif isinstance(ev, Lost):
            self._lost(ev.lease, ev.reason)
        if self.on_change is not None:
            self.on_change(ev)

    def _bound(self, lease: Lease) -> None:
        """RFC 2131 §4.4.1: the ACK's parameters configure the interface."""
        self.counters["bound"] += 1
        self.stack.set_address(self.iface, lease.addr, lease.prefixlen)
        if lease.router is not None:
            # RFC 2132 §3.5: the first router is the default gateway.
            self.stack.add_route("0.0.0.0/0", ip_str(lease.router))
        self._set_dns([(ip_str(d), DNS_PORT) for d in lease.dns])
        log.info("dhcp: %s", describe(self.iface, lease))

    def _lost(self, lease: Lease, reason: str) -> None:
        """RFC 2131 §4.4.5: at expiry the client stops using the address."""
        self.counters[f"lost_{reason}"] += 1
        if self.iface.addr == lease.addr:
            self.stack.clear_address(self.iface)
        if self._dns_set:
            self._set_dns([])
        level = logging.INFO if reason == "released" else logging.WARNING
        log.log(level, "dhcp: %s lost %s (%s)", self.iface.name, ip_str(lease.addr), reason)

    def _set_dns(self, servers: list[tuple[str, int]]) -> None:
        """Give the resolver the lease's servers, unless servers were configured
        otherwise (--dns wins)."""
        net = self.net
        if not hasattr(net, "configure_resolver"):
            return
        resolver = net.resolver
        if resolver is None:
            if servers:
                net.configure_resolver(servers)
                self._dns_set = servers
        elif not resolver.servers or (self._dns_set is not None
                                      and list(resolver.servers) == self._dns_set):
            resolver.servers = servers
            self._dns_set = servers
        else:
            self.counters["dns_kept"] += 1

    def summary(self) -> dict[str, Any]:
        """The agent's and the client's counters, and the state and address."""
        lease = self.client.lease
        return {
            "state": self.client.state.value,
            "addr": ip_str(lease.addr) if lease is not None else None,
            "counters": dict(sorted((self.counters + self.client.counters).items())),
        }


__all__ = ["DhcpAgent", "describe", "DNS_PORT"]
