"""UDP (RFC 768) on the stack: sockets, demultiplexing, ephemeral ports, ICMP errors.

Sans-I/O like TCP: :class:`UdpLayer` is a protocol handler of the core
(``Stack.register_protocol(IPPROTO_UDP, layer)``); every entry point takes ``now``.
A received datagram is queued on the best-matching socket (a connected socket before
one bound to the address, before a wildcard one, as Linux scores them); the socket's
``on_readable`` runs once per batch of frames with the socket's queue full of what
came. The asyncio face (stack/udpapi.py) turns that into ``datagram_received``.

Bounds: at most ``max_sockets`` sockets; each socket's receive queue holds at most
``rcvqueue_max`` datagrams and ``rcvbuf`` bytes (payload plus a fixed overhead per
datagram, as a kernel's truesize counts); past either, datagrams are dropped and
counted (``rcvbuf_errors``, Linux's UDP RcvbufErrors). A datagram for no socket
makes :meth:`UdpLayer.input` return False, and the core answers port unreachable
(RFC 1122 §4.1.3.1) under its ICMP rate limit, never for a broadcast.
"""

from __future__ import annotations

import errno
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from stack.netfamily import address_str, family_of, sockaddr
from stack.portshard import queue_of
from stack.skbuff import SkBuff
from stack.wire import WireError
from stack.wire import icmp as wicmp
from stack.wire import udp as wudp
from stack.wire.checksum import ones_sum
from stack.wire.fields import U16
from stack.wire.vnet import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM

IPPROTO_UDP = wudp.IPPROTO_UDP
ANY = b"\0\0\0\0"
#: The IPv6 wildcard: sockets on it hear IPv6 only (IPV6_V6ONLY), IPv4 ones IPv4.
ANY6 = bytes(16)
LIMITED_BROADCAST = b"\xff\xff\xff\xff"
#: Headroom in front of the UDP header: vnet header, Ethernet, IPv4 with options.
MAX_HEADER = 128
#: The UDP checksum field's offset in the header.
_CSUM_OFFSET = 6
#: Bytes a queued datagram costs beyond its payload (the kernel's skb overhead is of
#: this order): a flood of empty datagrams must fill the buffer too.
DATAGRAM_OVERHEAD = 256
#: Largest payload of one datagram: 65,535 less the IPv4 and UDP headers.
MAX_PAYLOAD = 65535 - 20 - wudp.UDP_HLEN

#: An ICMP error's meaning for a UDP socket (Linux's icmp_err_convert).
ICMP_ERRNO = {
    (wicmp.DEST_UNREACH, wicmp.UNREACH_NET): errno.ENETUNREACH,
    (wicmp.DEST_UNREACH, wicmp.UNREACH_HOST): errno.EHOSTUNREACH,
    (wicmp.DEST_UNREACH, wicmp.UNREACH_PROTOCOL): errno.ENOPROTOOPT,
    (wicmp.DEST_UNREACH, wicmp.UNREACH_PORT): errno.ECONNREFUSED,
    (wicmp.DEST_UNREACH, wicmp.UNREACH_NEEDFRAG): errno.EMSGSIZE,
    (wicmp.TIME_EXCEEDED, wicmp.EXC_TTL): errno.EHOSTUNREACH,
}


class UdpError(OSError):
    """A socket call that cannot be done (with the errno a kernel would give)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


@dataclass(slots=True)
class UdpConfig:
    """Tunables of one UdpLayer."""

    rcvbuf: int = 256 << 10               # bytes queued per socket (with overhead)
    rcvqueue_max: int = 1024              # datagrams queued per socket
    max_sockets: int = 16384              # sockets of the layer
    ephemeral_ports: tuple[int, int] = (32768, 60999)
    # (index, count): like TcpConfig.port_shard, the ports of this worker's queue
    port_shard: tuple[int, int] = (0, 1)
    ttl: int = 64


class IpOutput(Protocol):
    """What the UDP layer needs of the IP layer (stack.core.Stack)."""

    by_addr: dict

    def route(self, dst: bytes): ...
    def ip_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float, *,
                  df: bool = True, ttl: int = 64, iface=None) -> bool: ...


class UdpSocket:
    """One UDP endpoint: its local address and port, an optional remote end
    (connected), and its bounded receive queue of ``(payload, (ip, port))``."""

    __slots__ = ("layer", "local", "local_port", "remote", "remote_port", "broadcast",
                 "iface", "receive_queue", "queued_bytes", "on_readable", "on_error",
                 "closed", "counters")

    def __init__(self, layer: UdpLayer, local: bytes, local_port: int) -> None:
        self.layer = layer
        self.local = local
        self.local_port = local_port
        self.remote: bytes | None = None
        self.remote_port = 0
        #: May send to and receive broadcasts (SO_BROADCAST).
        self.broadcast = False
        #: Bound to one interface (SO_BINDTODEVICE): its index, or None.
        self.iface: int | None = None
        self.receive_queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self.queued_bytes = 0
        #: Called (once per batch) when datagrams were queued.
        self.on_readable: Callable[[UdpSocket], None] | None = None
        #: Called with an errno when an ICMP error about our datagram arrives
        #: (connected sockets only, as Linux without IP_RECVERR).
        self.on_error: Callable[[UdpSocket, int], None] | None = None
        self.closed = False
        self.counters: Counter[str] = Counter()

    @property
    def sockname(self) -> tuple[str, int]:
        """The local address and port as text (IPv6: a 4-tuple, as asyncio's)."""
        return sockaddr(self.local, self.local_port)

    @property
    def peername(self) -> tuple | None:
        """The remote end of a connected socket, else None."""
        return None if self.remote is None else sockaddr(self.remote, self.remote_port)

    def pop(self) -> tuple[bytes, tuple[str, int]] | None:
        """The oldest queued datagram and its source, or None."""
        if not self.receive_queue:
            return None
        item = self.receive_queue.popleft()
        self.queued_bytes -= len(item[0]) + DATAGRAM_OVERHEAD
        return item

    def __repr__(self) -> str:
        peer = f" -> {self.peername}" if self.remote is not None else ""
        return f"UdpSocket({self.sockname}{peer})"


class UdpLayer:
    """All UDP sockets of one stack."""

    def __init__(self, ip: IpOutput, *, config: UdpConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.ip = ip
        self.config = config or UdpConfig()
        self.rng = rng or random.SystemRandom()
        #: Sockets by local port (a short list each: addresses, connected ones).
        self.ports: dict[int, list[UdpSocket]] = {}
        self.count = 0
        self.counters: Counter[str] = Counter()
        self.batching = False
        self._ready: dict[UdpSocket, None] = {}

    # -- sockets -------------------------------------------------------------------
    def bind(self, addr: bytes = ANY, port: int = 0, *,
             remote: tuple[bytes, int] | None = None, broadcast: bool = False,
             iface: int | None = None) -> UdpSocket:
        """A new socket on ``addr`` (ANY: every address) and ``port`` (0: a random
        ephemeral one, RFC 6056 §3.3.1); ``remote`` connects it at once, so that the
        port is chosen for that peer's worker queue."""
        if self.count >= self.config.max_sockets:
            raise UdpError(errno.EMFILE, "UDP socket table full")
        if not _wild(addr) and not self._is_local(addr) and not broadcast:
            raise UdpError(errno.EADDRNOTAVAIL,
                           f"{address_str(addr)} is not an address of the stack")
        if not 0 <= port < 65536:
            raise UdpError(errno.EINVAL, f"bad port {port}")
        if port == 0:
            port = self._ephemeral(addr, remote[1] if remote else 0)
        elif self._conflicts(addr, port):
            raise UdpError(errno.EADDRINUSE, f"{address_str(addr)}:{port} is in use")
        sock = UdpSocket(self, addr, port)
        sock.broadcast = broadcast
        sock.iface = iface
        self.ports.setdefault(port, []).append(sock)
        self.count += 1
        if remote is not None:
            self.connect(sock, *remote)
        return sock

    def connect(self, sock: UdpSocket, addr: bytes, port: int) -> None:
        """Fix the socket's remote end: it then receives only from there, sends there
        by default and hears of ICMP errors (RFC 1122 §4.1.3.3)."""
        if not 0 < port < 65536:
            raise UdpError(errno.EINVAL, f"bad port {port}")
        if addr == LIMITED_BROADCAST and not sock.broadcast:
            raise UdpError(errno.EACCES, "broadcast needs allow_broadcast")
        if len(addr) != len(sock.local):
            raise UdpError(errno.EAFNOSUPPORT, "the socket's address family is not the peer's")
        if _wild(sock.local) and not sock.broadcast:
            route = self.ip.route(addr)
            if route is None:
                raise UdpError(errno.ENETUNREACH, f"no route to {address_str(addr)}")
            sock.local = route.src
        sock.remote, sock.remote_port = addr, port

    def close(self, sock: UdpSocket) -> None:
        """Release the socket and its port; queued datagrams are dropped."""
        if sock.closed:
            return
        sock.closed = True
        socks = self.ports.get(sock.local_port, [])
        if sock in socks:
            socks.remove(sock)
            self.count -= 1
            if not socks:
                del self.ports[sock.local_port]
        sock.receive_queue.clear()
        sock.queued_bytes = 0
        self._ready.pop(sock, None)

    def _conflicts(self, addr: bytes, port: int) -> bool:
        # IPv4 and IPv6 sockets never share a wildcard (IPV6_V6ONLY, as asyncio's).
        return any(len(s.local) == len(addr) and (s.local == addr or _wild(s.local)
                                                  or _wild(addr))
                   for s in self.ports.get(port, ()))

    def _is_local(self, addr: bytes) -> bool:
        """Whether ``addr`` is an address of the stack (IPv6: any state but DAD's
        failure; a tentative one cannot send yet, stack/ip6.py)."""
        if len(addr) == 16:
            ip6 = getattr(self.ip, "ip6", None)
            return ip6 is not None and ip6.addresses.lookup(addr) is not None
        return addr in self.ip.by_addr

    def _ephemeral(self, addr: bytes, rport: int) -> int:
        """A random free port (RFC 6056 §3.3.1, Algorithm 1: unpredictable, as RFC
        5452 asks of a resolver's source ports); with a ``port_shard`` and a known
        remote port, only ports that steer the replies to this worker's queue."""
        lo, hi = self.config.ephemeral_ports
        index, count = self.config.port_shard
        n = hi - lo + 1
        start = self.rng.randrange(n)
        for i in range(n):
            port = lo + (start + i) % n
            if count > 1 and rport and queue_of(port, rport, count) != index:
                continue
            if not self._conflicts(addr, port):
                return port
        raise UdpError(errno.EADDRINUSE, "no free ephemeral UDP port")

    # -- send --------------------------------------------------------------------------
    def sendto(self, sock: UdpSocket, payload: bytes | bytearray | memoryview,
               addr: tuple[bytes, int] | None, now: float) -> None:
        """Send one datagram from ``sock`` to ``addr`` (None: its remote end);
        fragmented by the IP layer when it is larger than the path's MTU."""
        if sock.closed:
            raise UdpError(errno.EBADF, "socket is closed")
        if addr is None:
            if sock.remote is None:
                raise UdpError(errno.EDESTADDRREQ, "not connected and no address given")
            dst, dport = sock.remote, sock.remote_port
        else:
            dst, dport = addr
        if not 0 < dport < 65536:
            raise UdpError(errno.EINVAL, f"bad port {dport}")
        if len(dst) != len(sock.local):
            raise UdpError(errno.EAFNOSUPPORT, "the socket's address family is not the peer's")
        if len(payload) > MAX_PAYLOAD:
            raise UdpError(errno.EMSGSIZE, f"datagram of {len(payload)} bytes is too long")
        bcast = dst == LIMITED_BROADCAST
        if bcast and not sock.broadcast:
            raise UdpError(errno.EACCES, "broadcast needs allow_broadcast")
        src = sock.local
        offload = False
        if bcast and src == ANY:
            # From the interface's own address, or 0.0.0.0 while it has none (a DHCP
            # client, RFC 2131 §4.1).
            ifaces = getattr(self.ip, "interfaces", [])
            if ifaces:
                src = ifaces[sock.iface or 0].addr
        elif _wild(src) or not bcast:
            route = self.ip.route(dst)
            if route is None and not bcast:
                self.counters["tx_no_route"] += 1
                raise UdpError(errno.ENETUNREACH, f"no route to {address_str(dst)}")
            if route is not None:
                offload = route.offload
                if _wild(src):
                    src = route.src
        skb = self._datagram(src, dst, sock.local_port, dport, payload, offload)
        iface = sock.iface if bcast else None
        if not self.ip.ip_output(src, dst, IPPROTO_UDP, skb, now, df=False,
                                 ttl=self.config.ttl, iface=iface):
            self.counters["tx_dropped"] += 1
            raise UdpError(errno.ENOBUFS, f"datagram to {address_str(dst)} not sent")
        self.counters["tx_datagrams"] += 1
        sock.counters["tx_datagrams"] += 1

    def _datagram(self, src: bytes, dst: bytes, sport: int, dport: int,
                  payload: bytes | bytearray | memoryview, offload: bool) -> SkBuff:
        length = wudp.UDP_HLEN + len(payload)
        skb = SkBuff(MAX_HEADER + length, MAX_HEADER + wudp.UDP_HLEN)
        skb.put_data(payload)
        head = skb.push(wudp.UDP_HLEN)
        pseudo = family_of(src).pseudo_header_sum(src, dst, IPPROTO_UDP, length)
        head[:] = wudp.UdpHeader(sport, dport, length, pseudo if offload else 0).to_bytes()
        if offload:
            # The device finishes the sum from csum_start (DESIGN.md, speed): the
            # field holds the folded pseudo-header sum, not complemented.
            skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
            skb.csum_start = 0
            skb.csum_offset = _CSUM_OFFSET
        else:
            # A computed 0 goes out as 0xFFFF: 0 means "no checksum" (RFC 768).
            csum = ~ones_sum(skb.view(), pseudo) & 0xFFFF
            U16.pack_into(skb.buf, skb.data + _CSUM_OFFSET, csum or 0xFFFF)
        return skb

    # -- receive ------------------------------------------------------------------------
    def input(self, skb: SkBuff, src: bytes, dst: bytes, now: float) -> bool:
        """A datagram for the stack (data at the UDP header): queue it on its socket.
        False when no socket takes it (the core then answers port unreachable)."""
        c = self.counters
        datagram = skb.view()
        try:
            hdr = wudp.UdpHeader.parse(datagram)
        except WireError as e:
            c[e.reason] += 1
            return True
        trusted = skb.vnet_flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)
        if len(dst) == 16:
            # RFC 8200 §8.1: the checksum is mandatory; groups have no sockets here.
            if hdr.checksum == 0 or dst[0] == 0xFF:
                c["udp6_zero_checksum" if hdr.checksum == 0 else "udp6_multicast"] += 1
                return True
            bcast = False
        else:
            bcast = dst == LIMITED_BROADCAST or dst not in self.ip.by_addr
        if not trusted and not wudp.verify(src, dst, datagram[:hdr.length]):
            c["udp_bad_checksum"] += 1
            return True
        sock = self._lookup(dst, hdr.dport, src, hdr.sport, bcast, skb)
        if sock is None:
            c["udp_no_port"] += 1
            return bcast  # no port unreachable about a broadcast (RFC 1122 §3.2.2)
        payload = datagram[wudp.UDP_HLEN:hdr.length]
        cost = len(payload) + DATAGRAM_OVERHEAD
        cfg = self.config
        if (len(sock.receive_queue) >= cfg.rcvqueue_max
                or sock.queued_bytes + cost > cfg.rcvbuf):
            c["rcvbuf_errors"] += 1
            sock.counters["rcvbuf_errors"] += 1
            return True
        sock.receive_queue.append((bytes(payload), sockaddr(src, hdr.sport)))
        sock.queued_bytes += cost
        c["rx_datagrams"] += 1
        sock.counters["rx_datagrams"] += 1
        self._ready[sock] = None
        if not self.batching:
            self.flush_events()
        return True

    def _lookup(self, dst: bytes, dport: int, src: bytes, sport: int, bcast: bool,
                skb: SkBuff) -> UdpSocket | None:
        """The socket for a datagram: the most specific match wins (connected to this
        source, then bound to this address, then the wildcard); a broadcast reaches
        only sockets that asked for broadcasts."""
        best: UdpSocket | None = None
        best_score = -1
        dev = getattr(skb.dev, "index", None)
        width = len(dst)
        for s in self.ports.get(dport, ()):
            if bcast and not s.broadcast or len(s.local) != width:
                continue
            if s.iface is not None and dev is not None and s.iface != dev:
                continue
            score = 0
            if not _wild(s.local):
                if s.local != dst and not bcast:
                    continue
                score += 2
            if s.remote is not None:
                if s.remote != src or s.remote_port != sport:
                    continue
                score += 4
            if score > best_score:
                best, best_score = s, score
        return best

    def begin_batch(self) -> None:
        """Frames read together follow: wake each socket once, at :meth:`end_batch`."""
        self.batching = True

    def end_batch(self, now: float) -> None:
        """The batch is over: wake the sockets that got datagrams."""
        self.batching = False
        self.flush_events()

    def flush_events(self) -> None:
        """Call ``on_readable`` of every socket with new datagrams (each once)."""
        while self._ready:
            ready, self._ready = self._ready, {}
            for sock in ready:
                if sock.on_readable is not None and not sock.closed:
                    sock.on_readable(sock)

    # -- ICMP ---------------------------------------------------------------------------
    def icmp_error(self, local: bytes, remote: bytes, sport: int, dport: int, type: int,
                   code: int, now: float, *, mtu: int = 0, seg_seq: int = 0) -> None:
        """An ICMP error quoting a datagram we sent (RFC 1122 §4.1.3.3): reported to
        the connected socket it came from; others never hear of it (as Linux without
        IP_RECVERR), so a forged error cannot disturb an unconnected server."""
        err = ICMP_ERRNO.get((type, code))
        if err is None:
            self.counters["icmp_error_ignored"] += 1
            return
        for s in self.ports.get(sport, ()):
            if s.remote == remote and s.remote_port == dport and s.local in (local, ANY, ANY6):
                self.counters["icmp_errors"] += 1
                s.counters["icmp_errors"] += 1
                if s.on_error is not None:
                    s.on_error(s, err)
                return
        self.counters["icmp_error_no_socket"] += 1

    # -- timers (none: UDP keeps no timers) --------------------------------------------------
    def next_deadline(self) -> float | None:
        """UDP has no timers."""
        return None

    def on_timer(self, now: float) -> None:
        """UDP has no timers."""

    def stats(self) -> dict:
        """Counters and the number of sockets."""
        return {"sockets": self.count, "counters": dict(sorted(self.counters.items()))}


def _wild(addr: bytes) -> bool:
    """0.0.0.0 or :: (every address of the family)."""
    return addr == ANY or addr == ANY6


__all__ = ["UdpLayer", "UdpSocket", "UdpConfig", "UdpError", "IPPROTO_UDP", "ANY", "ANY6",
           "LIMITED_BROADCAST", "MAX_PAYLOAD"]
