"""SOCKS5 UDP ASSOCIATE (RFC 1928 §7): the relay of one association.

The client asks on its TCP control connection; the reply names the relay's port on
the address that connection reached. From then on:

- a datagram to the relay port from the client (the control connection's address and
  one source port: the one the request named, or else the first one seen) carries a
  header naming its destination. The relay strips the header, checks the destination
  against the access rules and sends the data from a socket of its own for that
  destination: one connected socket per destination, so that the stack itself filters
  what comes back (only that host and port) and, with workers, picks a port whose
  replies reach this worker (stack/portshard.py);
- a datagram from a destination goes back to the client behind a header naming its
  source.

Anything else is dropped and counted: datagrams from other hosts or other ports of the
client's host, FRAG ≠ 0 (§7 lets a relay that does not reassemble drop fragments),
bad headers, destinations the rules forbid or that do not resolve.

The association lives as long as its control connection, or until nothing has moved
either way for the policy's UDP idle timeout. Bounds: MAX_PEERS destination sockets
(the least recently used one is closed first) and MAX_PENDING datagrams waiting for a
name to resolve or a destination socket to open; receive queues are the stack's own,
bounded per socket (stack/udp.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from apps.names import Resolve, lookup
from apps.socks.policy import Policy
from apps.socks.protocol import Address, SocksError, UdpHeader, parse_udp_header

#: Destination sockets one association may hold at once.
MAX_PEERS = 64
#: Datagrams waiting for a name or a new destination socket (beyond: dropped).
MAX_PENDING = 64
#: Bytes of one read of the control connection (its data is discarded).
_CONTROL_READ = 4096

Peer = tuple[str, int]


class _Endpoint(asyncio.DatagramProtocol):
    """Hands each datagram to a callback; counts ICMP errors reported on it."""

    def __init__(self, on_datagram: Callable[[bytes, Any], None], stats: Counter[str]) -> None:
        self.on_datagram = on_datagram
        self.stats = stats

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.stats["errors"] += 1


class Association:
    """One client's UDP relay (see the module docstring)."""

    def __init__(self, udp: Any, policy: Policy, resolve: Resolve | None,
                 client_ip: str, client_port: int, counters: Counter[str]) -> None:
        self.udp = udp
        self.policy = policy
        self.resolve = resolve
        self.client_ip = client_ip
        #: 0 until known: the request's DST.PORT, else the first datagram's source port.
        self.client_port = client_port
        #: The proxy's counters (udp_drop_<reason> and friends), shared by associations.
        self.counters = counters
        #: This association's: dgrams_up/down, bytes_up/down, drop_<reason>, errors...
        self.stats: Counter[str] = Counter()
        self.relay: asyncio.DatagramTransport | None = None
        self.peers: OrderedDict[Peer, asyncio.DatagramTransport] = OrderedDict()
        self.pending: asyncio.Queue[tuple[Address, bytes]] = asyncio.Queue(MAX_PENDING)
        self.last_activity = 0.0
        self.first_dest = ""
        self._pump: asyncio.Task[None] | None = None

    async def open(self, bind_ip: str) -> tuple[str, int]:
        """Bind the relay port on ``bind_ip``; returns (address, port) for the reply.
        With the client's port known the relay socket is connected to it, so that
        the stack drops what anyone else sends (and picks a port for this worker)."""
        remote = (self.client_ip, self.client_port) if self.client_port else None
        self.relay, _ = await self.udp.create_datagram_endpoint(
            lambda: _Endpoint(self.from_client, self.stats),
            local_addr=(bind_ip, 0), remote_addr=remote)
        self.last_activity = asyncio.get_running_loop().time()
        self._pump = asyncio.create_task(self._pump_loop())
        sockname = self.relay.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    async def hold(self, reader: asyncio.StreamReader, idle_timeout: float) -> str:
        """Wait for the end: the control connection closing, or idleness. Returns why."""
        loop = asyncio.get_running_loop()
        while True:
            left = self.last_activity + idle_timeout - loop.time()
            if left <= 0:
                self.counters["udp_idle_timeout"] += 1
                return "idle timeout"
            try:
                async with asyncio.timeout(left):
                    data = await reader.read(_CONTROL_READ)
            except TimeoutError:
                continue  # something may have moved meanwhile: look again
            except ConnectionError:
                return "control connection reset"
            if not data:
                return "control connection closed"
            # §7 gives the control connection no further use: discarded, counted.
            self.stats["control_bytes"] += len(data)

    def close(self) -> None:
        """Stop the relay: every socket of the association is released."""
        if self._pump is not None:
            self._pump.cancel()
        if self.relay is not None:
            self.relay.close()
        for transport in self.peers.values():
            transport.close()
        self.peers.clear()

    def summary(self) -> str:
        """The access log's note for the association."""
        s = self.stats
        drops = sorted((k[5:], n) for k, n in s.items() if k.startswith("drop_"))
        text = (f"udp associate: {s['dgrams_up']} datagrams up, {s['dgrams_down']} down, "
                f"{s['destinations']} destinations")
        if self.first_dest:
            text += f" (first {self.first_dest})"
        if drops:
            text += "; dropped " + ", ".join(f"{k}={n}" for k, n in drops)
        return text

    # -- client -> destination --------------------------------------------------------------
    def from_client(self, data: bytes, addr: Any) -> None:
        """A datagram to the relay port: checked, then sent on (or queued for a name)."""
        if addr[0] != self.client_ip or (self.client_port and addr[1] != self.client_port):
            self._drop("foreign")   # §7: only the associated client may use the relay
            return
        try:
            header, off = parse_udp_header(data)
        except SocksError:
            self._drop("bad_header")
            return
        if header.frag:
            self._drop("fragment")
            return
        if not self.client_port:
            self.client_port = addr[1]   # the first datagram fixes the client's port
        self.last_activity = asyncio.get_running_loop().time()
        payload = data[off:]
        ip = self.policy.resolve(header.address)   # literals and --host names at once
        if ip is not None and (peer := self.peers.get(key := (ip, header.address.port))):
            self.peers.move_to_end(key)
            self._send(peer, payload)
            return
        try:
            self.pending.put_nowait((header.address, payload))
        except asyncio.QueueFull:
            self._drop("queue_full")

    async def _pump_loop(self) -> None:
        """Datagrams for destinations without a socket yet, in order: resolve, check,
        open the socket, send."""
        while True:
            address, payload = await self.pending.get()
            peer = await self._destination(address)
            if peer is not None:
                self._send(peer, payload)

    async def _destination(self, address: Address) -> asyncio.DatagramTransport | None:
        """The socket for ``address`` (opened if need be), or None (counted)."""
        found = await lookup(address, self.policy, self.resolve)
        if found.ip is None:
            self._drop("unresolved")
            return None
        key = (found.ip, address.port)
        if key in self.peers:
            return self.peers[key]
        if ":" in found.ip:
            self._drop("ipv6")
            return None
        if address.port == 0 or not self.policy.destination_allowed(found.ip, address.port):
            self._drop("not_allowed")
            return None
        if len(self.peers) >= MAX_PEERS:
            _, oldest = self.peers.popitem(last=False)
            oldest.close()
            self.stats["peers_closed"] += 1
        try:
            transport, _ = await self.udp.create_datagram_endpoint(
                lambda: _Endpoint(lambda data, _addr: self.from_peer(key, data), self.stats),
                remote_addr=key)
        except OSError:
            self._drop("no_route")
            return None
        self.peers[key] = transport
        self.stats["destinations"] += 1
        self.first_dest = self.first_dest or str(Address.of(*key))
        return transport

    def _send(self, peer: asyncio.DatagramTransport, payload: bytes) -> None:
        self.stats["dgrams_up"] += 1
        self.stats["bytes_up"] += len(payload)
        peer.sendto(payload)

    # -- destination -> client --------------------------------------------------------------
    def from_peer(self, key: Peer, data: bytes) -> None:
        """A datagram from a destination (its connected socket let nothing else in):
        back to the client behind a header naming its source."""
        if self.relay is None or self.relay.is_closing():
            return
        self.last_activity = asyncio.get_running_loop().time()
        self.stats["dgrams_down"] += 1
        self.stats["bytes_down"] += len(data)
        datagram = UdpHeader(Address.of(*key)).encode() + data
        if self.relay.get_extra_info("peername") is not None:
            self.relay.sendto(datagram)
        else:  # client_port is known: nothing comes back before the client sent
            self.relay.sendto(datagram, (self.client_ip, self.client_port))

    def _drop(self, reason: str) -> None:
        self.stats[f"drop_{reason}"] += 1
        self.counters[f"udp_drop_{reason}"] += 1
