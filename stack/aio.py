"""The asyncio (uvloop) driver: TAP devices in, the sans-I/O core, TAP devices out.

One reader callback per device fd reads frames in batches (until EAGAIN or a round
limit, for fairness between devices), feeds them to the core and writes what the core
queued before reading again — the read buffers are reused, so frames are written out
before the next batch overwrites them. One timer follows the core's next deadline.
Optional: a pcap tee of every frame, and a fault injector on the stack's own devices.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from stack.core import Stack
from stack.gso import complete_checksum
from stack.iface import Interface
from stack.netdev.faults import FaultDecider, FaultModel, flip_bit
from stack.netdev.link import DeviceGone
from stack.netdev.pcap import PcapTee
from stack.skbuff import SkBuff
from stack.tcp.api import TcpState
from stack.tcp.tcb import Tcb
from stack.wire.ethernet import ETH_HLEN
from stack.wire.fields import ETH_TYPE, U16

if TYPE_CHECKING:
    from stack.control import ControlServer
    from stack.dhcpagent import DhcpAgent
    from stack.dns import Resolver, ResolverConfig
    from stack.netdev.tap import TapDevice
    from stack.tcp.api import TcpConfig
    from stack.workers import ArpShare, Seat

#: The EtherType of IPv4 (only IPv4 frames are corrupted on purpose: they have checksums).
_IPV4 = 0x0800
log = logging.getLogger("tapsplice.driver")
#: TCP states in which a connection is no running session (TapStack.sessions).
_ENDED = frozenset({TcpState.CLOSED, TcpState.LISTEN, TcpState.TIME_WAIT})

#: Read batches per readable event before yielding to the loop (fairness bound).
MAX_ROUNDS = 8
#: Seconds a stop signal lets running sessions finish (TapStack.drain_period).
DEFAULT_DRAIN = 10.0
#: Seconds the stack stays after resetting what a drain left (answers to those RSTs).
DRAIN_LINGER = 1.0
#: The address of an Attachment whose interface is configured by DHCP (stack/dhcpagent.py).
DHCP = "dhcp"
#: Seconds a drain waits after sending DHCPRELEASE (its neighbour lookup may be pending).
DHCP_RELEASE_LINGER = 0.3


class FrameDevice(Protocol):
    """What the driver needs of a device (stack/netdev/tap.py's TapDevice, a worker's
    queue of one): non-blocking batched reads into SkBuffs, writes with a backlog that
    the loop drains when the fd is writable again."""

    #: Frames one :meth:`read_batch` returns at most.
    batch: int

    def fileno(self) -> int:
        """The fd the loop watches."""
        ...

    def read_batch(self) -> list[SkBuff]:
        """Up to ``batch`` frames read without blocking (the buffers are reused)."""
        ...

    def write(self, skb: SkBuff) -> bool:
        """Send one frame (or keep it in the backlog)."""
        ...

    def backlog_len(self) -> int:
        """Frames waiting for the fd to become writable."""
        ...

    def flush_backlog(self) -> bool:
        """Write what waits; True once the backlog is empty."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class SpliceLayer(Protocol):
    """What TapStack reads of the splice layer above it (splice.splicer.Splicer, set
    as ``TapStack.splicer`` by splice.aio.SpliceApi.attach): the stack imports nothing
    of splice/, so this is the seam."""

    def live_pairs(self) -> int:
        """Splice pairs not yet in their TIMEWAIT."""
        ...

    def end_all(self, why: str, now: float) -> int:
        """Reset every running splice (both peers); how many pairs."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters and pair counts."""
        ...


@dataclass(order=True, slots=True)
class _Delayed:
    at: float
    order: int
    rx: bool = field(compare=False)
    iface: Interface = field(compare=False)
    skb: SkBuff = field(compare=False)


class StackDriver:
    """Runs a :class:`Stack` on real devices under an asyncio event loop."""

    def __init__(self, stack: Stack, *, pcap: PcapTee | None = None,
                 impair: FaultModel | None = None, seed: int = 0,
                 impair_limit: int = 4096) -> None:
        self.stack = stack
        self.devices: dict[int, FrameDevice] = {}
        self.pcap = pcap
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped = asyncio.Event()
        self._writers: set[int] = set()
        rng = random.Random(seed)
        self._rx_fault = FaultDecider(impair, random.Random(rng.random())) if impair else None
        self._tx_fault = FaultDecider(impair, random.Random(rng.random())) if impair else None
        self._delayed: list[_Delayed] = []
        self._delay_order = 0
        #: Called with (iface, skb) for every frame read, before the core sees it
        #: (stack/workers.py shares ARP this way).
        self.rx_tee: Callable[[Interface, SkBuff], None] | None = None
        #: Called on SIGINT/SIGTERM in :meth:`serve_forever` (default: stop at once;
        #: TapStack drains first).
        self.on_signal: Callable[[], None] = self.stop
        self._impair_limit = impair_limit
        #: Why the driver stopped on its own: a device that disappeared (raw sockets).
        self.lost: list[str] = []

    def attach(self, iface: Interface, device: FrameDevice) -> None:
        """Bind an interface of the stack to an open device (TapDevice-like)."""
        self.devices[iface.index] = device

    def now(self) -> float:
        """The driver's clock (the event loop's monotonic time)."""
        assert self.loop is not None
        return self.loop.time()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Register the device readers and announce the interfaces."""
        self.loop = loop = asyncio.get_running_loop()
        for iface in self.stack.interfaces:
            dev = self.devices[iface.index]
            loop.add_reader(dev.fileno(), self._on_readable, iface, dev)
        self.stack.start(self.now())
        self._flush()
        self._reschedule()

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return."""
        self._stopped.set()

    async def serve_forever(self, handle_signals: bool = True) -> None:
        """Run until :meth:`stop` or SIGINT/SIGTERM, then release devices."""
        if self.loop is None:
            self.start()
        assert self.loop is not None
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(sig, lambda: self.on_signal())
        try:
            await self._stopped.wait()
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.loop.remove_signal_handler(sig)
            self.close()

    def close(self) -> None:
        """Remove readers, cancel timers, close devices and the capture."""
        if self.loop is not None:
            for dev in self.devices.values():
                try:
                    self.loop.remove_reader(dev.fileno())
                    self.loop.remove_writer(dev.fileno())
                except (ValueError, OSError):
                    pass
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for dev in self.devices.values():
            dev.close()
        self.devices.clear()
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None

    # -- data path ---------------------------------------------------------------
    def _on_readable(self, iface: Interface, dev: FrameDevice) -> None:
        stack = self.stack
        loop = self.loop
        assert loop is not None  # a reader is registered by start() only
        try:
            for _ in range(MAX_ROUNDS):
                try:
                    skbs = dev.read_batch()
                except DeviceGone as exc:
                    self._device_gone(dev, exc)
                    return
                if not skbs:
                    break
                now = loop.time()
                stack.begin_batch()
                tee = self.rx_tee
                try:
                    for skb in skbs:
                        if tee is not None:
                            tee(iface, skb)
                        if self.pcap is not None:
                            self.pcap.rx(iface.name, skb, now)
                        if self._rx_fault is not None:
                            self._impaired(True, iface, skb, now)
                        else:
                            stack.receive_frame(iface, skb, now)
                finally:
                    # Even when a handler raised: a batch left open would hold every
                    # later send until the next frame arrives.
                    stack.end_batch(now)
                    self._flush()
                if len(skbs) < dev.batch:
                    break
        finally:
            self._reschedule()

    def _device_gone(self, dev: FrameDevice, exc: DeviceGone) -> None:
        """A raw interface was deleted under the stack: stop watching it and stop the
        stack (its address and connections went with it); ``lost`` says which."""
        assert self.loop is not None
        self.loop.remove_reader(dev.fileno())
        self.stack.counters["device_gone"] += 1
        self.lost.append(str(exc))
        log.error("%s: stopping", exc)
        self.stop()

    def _flush(self) -> None:
        out = self.stack.drain()
        if not out:
            return
        assert self.loop is not None  # the core queues frames only once started
        now = self.loop.time()
        for iface, skb in out:
            if self._tx_fault is not None:
                self._impaired(False, iface, skb, now)
                continue
            self._transmit(iface, skb, now)

    def _transmit(self, iface: Interface, skb: SkBuff, now: float) -> None:
        dev = self.devices.get(iface.index)
        if dev is None:
            return
        if self.pcap is not None:
            self.pcap.tx(iface.name, skb, now)
        dev.write(skb)
        if dev.backlog_len() and iface.index not in self._writers:
            assert self.loop is not None
            self._writers.add(iface.index)
            self.loop.add_writer(dev.fileno(), self._on_writable, iface.index, dev)

    def _on_writable(self, index: int, dev: FrameDevice) -> None:
        if dev.flush_backlog():
            assert self.loop is not None
            self.loop.remove_writer(dev.fileno())
            self._writers.discard(index)

    # -- impairment (--impair) ------------------------------------------------------
    def _impaired(self, rx: bool, iface: Interface, skb: SkBuff, now: float) -> None:
        fault = self._rx_fault if rx else self._tx_fault
        assert fault is not None  # called only when that direction is impaired
        fate = fault.decide(now, len(skb))
        c = self.stack.counters
        if fate.lost:
            c["impair_lost"] += 1
            return
        damaged = fate.corrupt and U16.unpack_from(skb.buf, skb.data + ETH_TYPE)[0] == _IPV4
        if fate.copies == 1 and fate.arrival <= now and not damaged:
            return self._deliver(rx, iface, skb, now)
        c["impair_duplicated"] += fate.copies - 1
        c["impair_reordered"] += fate.reordered
        for _ in range(fate.copies):
            if len(self._delayed) >= self._impair_limit:
                c["impair_queue_full"] += 1
                continue
            # A delayed or damaged frame outlives the read buffer: copy it.
            copy = SkBuff.from_bytes(skb.view(), headroom=128)
            copy.copy_vnet_from(skb)
            if damaged:  # only IPv4: an ARP has no checksum (a wire's FCS drops it)
                c["impair_corrupted"] += 1
                complete_checksum(copy)
                copy.clear_vnet()
                flip_bit(copy.buf, copy.data + ETH_HLEN, copy.tail, fate.bitpos)
            self._delay_order += 1
            heapq.heappush(self._delayed,
                           _Delayed(fate.arrival, self._delay_order, rx, iface, copy))
        self._reschedule()

    def _deliver(self, rx: bool, iface: Interface, skb: SkBuff, now: float) -> None:
        if rx:
            self.stack.receive_frame(iface, skb, now)
        else:
            self._transmit(iface, skb, now)

    def _run_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0].at <= now:
            d = heapq.heappop(self._delayed)
            self._deliver(d.rx, d.iface, d.skb, now)
        self._flush()

    # -- timers ------------------------------------------------------------------------
    def _reschedule(self) -> None:
        deadline = self.stack.next_deadline()
        if self._delayed:
            t = self._delayed[0].at
            deadline = t if deadline is None else min(deadline, t)
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            assert self.loop is not None
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        # The loop may fire a callback up to its clock resolution early; the core
        # must see the deadline it asked for, or it would ask again at once.
        assert self.loop is not None
        now = max(self.loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        self._run_delayed(now)
        self.stack.on_timer(now)
        self._flush()
        self._reschedule()

    def poke(self) -> None:
        """Flush output and re-arm the timer after an API call changed the core."""
        self._flush()
        self._reschedule()


@dataclass
class Attachment:
    """One device for the stack: its name, the namespace holding it (None: the
    current one) and the stack's address on it ("a.b.c.d/n", or "dhcp": a lease;
    "0.0.0.0/32": none), and its IPv6 ones (``addr6``: "2001:db8::2/64", or "auto":
    SLAAC; stack/ip6.py)."""

    tap: str
    addr: str
    netns: str | None = None
    #: The interface's MAC (None: a random one on a TAP, the interface's own on a raw
    #: socket); workers of one stack share it.
    mac: bytes | None = None
    #: "tap" (stack/netdev/tap.py) or "raw": a packet socket on an existing
    #: interface, a veth or a NIC (stack/netdev/raw.py).
    kind: str = "tap"
    addr6: tuple[str, ...] = ()


def open_device(a: Attachment, offload: bool) -> TapDevice:
    """Open the device of one attachment (a TAP, or a packet socket for "raw")."""
    if a.kind == "raw":
        from stack.netdev.raw import RawDevice
        return RawDevice.open(a.tap, netns=a.netns, offload=offload, mac=a.mac)
    if a.kind != "tap":
        raise ValueError(f"unknown attachment kind {a.kind!r}")
    from stack.netdev.tap import TapDevice
    return TapDevice.open(a.tap, netns=a.netns, offload=offload)


def _check_dhcp(attachments: list[Attachment], seat: Seat | None) -> None:
    """Refuse what DHCP cannot do here: a lease shared by workers, or two DHCP
    interfaces (both clients would need UDP port 68 of the one stack)."""
    n = sum(a.addr == DHCP for a in attachments)
    if n and seat is not None:
        raise ValueError("--addr dhcp needs a single process: the workers would have to "
                         "share one lease (run without --workers)")
    if n > 1:
        raise ValueError("--addr dhcp on one interface only (the clients would share "
                         "UDP port 68)")


class TapStack:
    """The whole stack on TAP devices with its asyncio TCP API: what a proxy embeds.

    ::

        async with TapStack([Attachment("tsc0", "198.18.0.2/24", "tsc")]) as net:
            server = await net.start_server(handler, "198.18.0.2", 7)
            reader, writer = await net.open_connection("198.19.0.1", 80)

    ``seat``: this process is one of several workers (stack/workers.py); the seat's
    queues are used instead of opening the attachments' devices, with the shared MACs,
    local ports of this worker's queue and ARP and NDP shared through worker 0.
    """

    def __init__(self, attachments: list[Attachment], *, forwarding: bool = False,
                 offload: bool = True, routes: list[tuple[str, str]] | None = None,
                 pcap: PcapTee | None = None, impair: FaultModel | None = None,
                 seed: int = 0, tcp_config: TcpConfig | None = None,
                 control: str | bool = False, seat: Seat | None = None) -> None:
        from stack.hostkey import host_secret  # (keeps RFC 7217 addresses over restarts)
        self.stack = Stack(forwarding=forwarding, ipv6_secret=host_secret())
        #: IPv6 addresses and routes, configured at start (their DAD needs the clock).
        self._ipv6: list[tuple[Interface, tuple[str, ...]]] = []
        self._routes6: list[tuple[str, str]] = []
        self.devices: list[tuple[Interface, TapDevice]] = []
        self.seat = seat
        _check_dhcp(attachments, seat)
        if seat is not None:
            from stack.tcp.api import TcpConfig
            if len(seat.devices) != len(attachments):
                raise ValueError("the seat has a different number of devices")
            attachments = [replace(a, mac=m)
                           for a, m in zip(attachments, seat.macs, strict=True)]
            tcp_config = replace(tcp_config or TcpConfig(),
                                 port_shard=(seat.index, seat.count))
        self._attach(attachments, seat.devices if seat is not None else None, offload,
                     routes or [])
        self.driver = StackDriver(self.stack, pcap=pcap, impair=impair, seed=seed)
        for iface, dev in self.devices:
            self.driver.attach(iface, dev)
        self._transports(tcp_config)
        #: The splice layer on this stack, if any: set by the layer above when it
        #: attaches (splice.aio.SpliceApi.attach(net)); read here for sessions, the
        #: drain and the counters, and by the control socket.
        self.splicer: SpliceLayer | None = None
        self.open_connection = self.api.open_connection
        self.start_server = self.api.start_server
        self.create_connection = self.api.create_connection
        self.create_server = self.api.create_server
        # -- control socket (stack/control.py): False none, True the default path --
        self.control_path = control
        self.control: ControlServer | None = None
        self.arp_share: ArpShare | None = None
        #: Seconds a stop signal lets running sessions finish before the rest are reset
        #: (see :meth:`drain`); a second signal cuts it short.
        self.drain_period = DEFAULT_DRAIN
        #: Called when a drain starts (a proxy closes its idle kept-alive connections).
        self.drain_hooks: list[Callable[[], None]] = []
        #: The DNS stub resolver behind :meth:`resolve` (configure_resolver).
        self.resolver: Resolver | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._drain_cut = asyncio.Event()
        self.driver.on_signal = self._on_signal
        #: Interfaces whose address comes from DHCP, and their agents once started.
        self.dhcp_ifaces = [iface for (iface, _dev), a in zip(self.devices, attachments,
                                                                strict=True)
                            if a.addr == DHCP]
        self.dhcp_agents: list[DhcpAgent] = []

    def _transports(self, tcp_config: TcpConfig | None) -> None:
        """TCP and UDP on the stack, and their asyncio faces (UDP's ports follow the
        same worker shard as TCP's)."""
        from stack.hostkey import host_secret
        from stack.streams import TcpApi
        from stack.tcp.layer import TcpLayer
        from stack.udp import IPPROTO_UDP, UdpConfig, UdpLayer
        from stack.udpapi import UdpApi
        from stack.wire.ipv4 import IPPROTO_TCP

        self.tcp = TcpLayer(self.stack, config=tcp_config, secret=host_secret())
        self.stack.register_protocol(IPPROTO_TCP, self.tcp)
        self.udp = UdpLayer(self.stack, config=UdpConfig(
            port_shard=self.tcp.config.port_shard))
        self.stack.register_protocol(IPPROTO_UDP, self.udp)
        self.api = TcpApi(self.tcp, self.driver)
        self.udp_api = UdpApi(self.udp, self.driver)
        self.create_datagram_endpoint = self.udp_api.create_datagram_endpoint

    def _attach(self, attachments: list[Attachment], devices: list[TapDevice] | None,
                offload: bool, routes: list[tuple[str, str]]) -> None:
        """Open each attachment's device (or take the seat's ``devices``), add its
        interface and the routes; on any error every device is closed again."""
        try:
            for i, a in enumerate(attachments):
                dev = devices[i] if devices is not None else open_device(a, offload)
                # "dhcp": no address until a lease arrives (RFC 2131 §4.1).
                addr = "0.0.0.0/32" if a.addr == DHCP else a.addr
                # A raw socket answers to its interface's MAC unless told otherwise.
                mac = a.mac or getattr(dev, "mac", None)
                iface = self.stack.add_interface(a.tap, addr, mac=mac, mtu=dev.mtu,
                                                 offload=dev.offload)
                self.devices.append((iface, dev))
                if a.addr6:
                    self._ipv6.append((iface, a.addr6))
            for prefix, via in routes:
                if ":" in prefix + via:
                    self._routes6.append((prefix, via))
                else:
                    self.stack.add_route(prefix, via)
        except BaseException:
            for dev in devices or [dev for _iface, dev in self.devices]:
                dev.close()
            raise

    # -- names ----------------------------------------------------------------------
    def configure_resolver(self, servers: list[tuple[str, int]], *,
                           hosts: dict[str, str] | None = None,
                           config: ResolverConfig | None = None) -> Resolver:
        """Use these DNS servers (and hosts mapping) for :meth:`resolve`: queries go
        over the stack's own UDP, and TCP for truncated answers (stack/dns/)."""
        from stack.dns import Resolver
        self.resolver = Resolver(self, servers, hosts=hosts, config=config)
        return self.resolver

    async def resolve(self, name: str, *, kinds: tuple[str, ...] = ("A",)) -> list[str]:
        """The addresses of ``name`` (IPv4 first; "AAAA" in ``kinds`` for IPv6 too).
        Raises stack.dns.NameNotFound, ResolverTimeout or ResolverFailure (OSErrors
        that name the host)."""
        if self.resolver is None:
            self.configure_resolver([])
        assert self.resolver is not None
        return await self.resolver.resolve(name, kinds=kinds)

    def start(self) -> None:
        """Start reading the devices (inside a running event loop), and the DHCP
        agents of the interfaces that take their address from a lease."""
        self.driver.start()
        if self.seat is not None and self.arp_share is None:
            # Before the IPv6 addresses: only worker 0 runs their DAD.
            from stack.workers import ArpShare
            self.arp_share = arp_share = ArpShare(self, self.seat)
            arp_share.start()
        for iface, specs in self._ipv6:
            self.stack.ip6.configure(iface, specs, self.driver.now())
        for prefix, via in self._routes6:
            self.stack.ip6.add_route(prefix, via)
        self._ipv6, self._routes6 = [], []
        self.driver.poke()
        if self.dhcp_ifaces and not self.dhcp_agents:
            self._start_dhcp()
        if self.control_path is not False and self.control is None:
            from stack.control import ControlServer
            path = None if self.control_path is True else self.control_path
            self.control = control = ControlServer(self, path)
            control.start()

    def _start_dhcp(self) -> None:
        """One agent per DHCP interface, a timer source of the core (stack/dhcpagent.py)."""
        from stack.dhcpagent import DhcpAgent
        for iface in self.dhcp_ifaces:
            agent = DhcpAgent(self, iface, self.udp, random.SystemRandom())
            self.stack.timer_sources.append(agent)
            self.dhcp_agents.append(agent)
            agent.start()

    def release_leases(self) -> bool:
        """Give every DHCP lease back (DHCPRELEASE, RFC 2131 §4.4.6) while the devices
        are still open, and write it out at once; whether an agent was running. Once
        the loop is closed nothing can be sent: the agents are left as they are."""
        loop = self.driver.loop
        running = [a for a in self.dhcp_agents if a.sock is not None]
        if not running or loop is None or loop.is_closed():
            return False
        for agent in running:
            agent.stop()  # sends and flushes through driver.poke
        return True

    async def serve_forever(self, handle_signals: bool = True) -> None:
        """Run until SIGINT/SIGTERM or :meth:`close`. A worker (``seat``) tells its
        supervisor it is ready now, if it has not yet."""
        if self.seat is not None:
            self.seat.report("ready")
        try:
            await self.driver.serve_forever(handle_signals)
        finally:
            # Close the control socket while its loop still runs.
            if self.control is not None:
                self.control.close()
                self.control = None

    # -- graceful stop ----------------------------------------------------------------
    def sessions(self) -> int:
        """Connections whose peers may still send: neither closed, listening nor in
        TIME-WAIT, with each splice pair not yet in its TIMEWAIT counted once."""
        n = self.splicer.live_pairs() if self.splicer is not None else 0
        for tcb in self.tcp.connections.values():
            if tcb.splice is None and tcb.state not in _ENDED:
                n += 1
        return n

    def reset_all(self, why: str = "drain") -> int:
        """Reset every running session on both sides: spliced pairs (a RST to each
        peer, splice/guard.py), then every other connection (RFC 9293 §3.10.5 abort);
        how many. Counted as ``<why>_reset``."""
        now = self.driver.now()
        n = self.splicer.end_all(why, now) if self.splicer is not None else 0
        for tcb in list(self.tcp.connections.values()):
            # What is left of splice pairs waits out its TIMEWAIT: its TCBs are silent.
            if tcb.splice is None and tcb.state not in _ENDED:
                assert isinstance(tcb, Tcb)  # a TIME-WAIT record is in _ENDED
                tcb.abort(now)
                n += 1
        self.stack.counters[f"{why}_reset"] += n
        self.tcp.flush_events()
        self.driver.poke()
        return n

    async def drain(self, seconds: float) -> None:
        """Graceful stop: refuse new connections at once (the listeners close; a SYN
        then gets a RST), let running sessions finish for up to ``seconds``, reset what
        remains on both sides, then stop. A second stop signal ends the wait early."""
        now = self.driver.now()
        for lst in list(self.tcp.listeners.values()):
            lst.close(now)
        for hook in self.drain_hooks:
            hook()
        self.driver.poke()
        log.info("stopping: no new connections; %d sessions may finish within %gs",
                 self.sessions(), seconds)
        deadline = now + seconds
        while self.sessions() and not self._drain_cut.is_set():
            left = deadline - self.driver.now()
            if left <= 0:
                break
            try:  # re-checked every 100 ms: sessions end inside the core, unannounced
                await asyncio.wait_for(self._drain_cut.wait(), min(0.1, left))
            except TimeoutError:
                pass
        reset = self.reset_all("drain")
        log.info("stopped: %d sessions reset", reset)
        if reset and not self._drain_cut.is_set():
            # A peer that got data after its last ACK takes our RST as inexact and
            # answers with a challenge ACK (RFC 5961 §3.2); the stack must still be
            # there to answer that with the exact RST (the 4-tuple is closed now).
            try:
                await asyncio.wait_for(self._drain_cut.wait(), DRAIN_LINGER)
            except TimeoutError:
                pass
        if self.release_leases():
            # The RELEASE may wait for the server's ARP reply: give it that long.
            await asyncio.sleep(DHCP_RELEASE_LINGER)
        self.driver.stop()

    def _on_signal(self) -> None:
        """First stop signal: drain; a second one: stop now (what remains is reset)."""
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self.drain(self.drain_period))
        else:
            log.warning("second stop signal: resetting what remains now")
            self._drain_cut.set()

    def close(self) -> None:
        """Stop and release the devices (and the control socket)."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.arp_share is not None:
            self.arp_share.stop()
        self.release_leases()
        self.driver.stop()
        self.driver.close()
        if self.seat is not None:
            self.seat.report("summary", self.summary())  # the supervisor adds them up

    def summary(self) -> dict:
        """Counters of the stack, its TCP and its devices."""
        return {
            "stack": dict(sorted(self.stack.counters.items())),
            "tcp": dict(sorted(self.tcp.counters.items())),
            "udp": dict(sorted(self.udp.counters.items())),
            "devices": {iface.name: dict(dev.counters) for iface, dev in self.devices},
            "connections": len(self.tcp.connections),
            "splice": self.splicer.stats()["counters"] if self.splicer is not None else {},
            "neighbours": len(self.stack.neigh),
            **({"dns": self.resolver.stats()["counters"]} if self.resolver else {}),
            **({"arp_share": dict(self.arp_share.counters)} if self.arp_share else {}),
            **({"dhcp": {a.iface.name: a.summary() for a in self.dhcp_agents}}
               if self.dhcp_agents else {}),
        }

    async def __aenter__(self) -> TapStack:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
