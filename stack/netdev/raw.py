"""Raw-socket attachment: the stack on any existing Linux interface (AF_PACKET).

A TAP is a device the stack owns; a veth, a macvlan of a real NIC or a physical port
is not. A packet socket (packet(7)) bound to such an interface sees every frame it
receives and can send frames out of it, which is all the stack needs. The socket is
set up to behave like the TAP of stack/netdev/tap.py, so the driver and the core
cannot tell the two apart:

* ``PACKET_VNET_HDR``: every frame carries the same 10-byte virtio_net_hdr as on the
  TAP. A veth hands a TCP super-segment of up to 64 KB to the socket whole, with its
  checksum left partial, and accepts one from us (gso_size set), which the kernel
  segments (or the peer takes whole); no per-byte work in Python.
* ``PACKET_IGNORE_OUTGOING``: without it every frame the stack sends is delivered back
  to the socket as an outgoing frame (the kernel's packet taps see both directions).
* ``PACKET_QDISC_BYPASS``: frames go straight to the driver; the stack keeps its own
  bounded backlog (the one of TapDevice, inherited) instead of a qdisc's.
* the interface's own MAC by default; another one (``mac=``) is added to the
  interface's unicast filter (``PACKET_MR_UNICAST``) so that a real NIC accepts it.
  Frames for other MACs (a promiscuous or shared interface) are counted and dropped
  here, before the core sees them.

With several workers the sockets of one interface form a ``PACKET_FANOUT`` group
whose member is chosen by the project's steering program (stack/netdev/steer.py) run
as the group's eBPF program, so both directions of a connection reach one worker as
with the TAP queues.

Frames are read with one ``recv_into`` per frame (MSG_TRUNC tells an oversized frame
from a full buffer). A TPACKET_V3 receive ring (tools/bench/raw_ring.py) reads small
frames faster in isolation, but a forwarder on it was slower and every round trip
took a millisecond longer (a V3 block reaches user space only when full or when its
retire timer runs out); the README's raw-socket section has the figures.

An interface that goes down makes the socket report ENETDOWN once: logged, counted,
and frames flow again when it comes back up. That error also raises EPOLLERR on the
socket, on which libuv (uvloop) stops watching a descriptor for good; so the event
loop is given an epoll descriptor holding the socket instead (:meth:`fileno`), which
only ever turns readable, and the socket's own error is read and cleared here. The
same epoll descriptor reports the socket writable while the transmit backlog holds
frames, and :meth:`read_batch` flushes it then. One that disappears leaves the socket
bound to nothing: :meth:`RawDevice.read_batch` raises :class:`DeviceGone` and the
driver stops the stack (stack/aio.py), never spinning on a dead descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import struct

from stack.netdev.link import DeviceGone
from stack.netdev.netns import enter_netns
from stack.netdev.offload import ETH_HLEN, VNET_HDR_LEN, take_frame
from stack.netdev.tap import FRAME_MAX, HEADROOM, TapDevice
from stack.skbuff import SkBuff

log = logging.getLogger("tapsplice.raw")

# linux/if_packet.h, linux/if_ether.h, linux/sockios.h
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_UNICAST = 3
PACKET_STATISTICS = 6
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20
PACKET_FANOUT_DATA = 22
PACKET_IGNORE_OUTGOING = 23
PACKET_VNET_HDR = 15
PACKET_FANOUT_EBPF = 7
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
#: Linux 6.9: the group's own hook skips outgoing frames (the member sockets'
#: PACKET_IGNORE_OUTGOING no longer applies once they joined a group).
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
ETH_P_ALL = 0x0003
SIOCGIFMTU = 0x8921
SIOCGIFADDR = 0x8915
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # asm-generic/socket.h (CAP_NET_ADMIN)

#: Socket buffer sizes: room for a few dozen 64 KB super-segments each way (the
#: default 208 KB holds three).
SOCKET_BUFFER = 4 << 20

_RAW_COUNTERS = ("rx_dropped_other_host", "rx_link_down", "tx_link_errors",
                 "rx_dropped_socket_full")


class _SocketDev:
    """What TapDevice keeps of its pytun device: an fd, a name, close()."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class RawDevice(TapDevice):
    """An AF_PACKET socket bound to one existing interface (see the module docstring).

    The transmit side (vnet header, bounded counted backlog) is the TAP's; receive and
    the link's life are this class's own.
    """

    #: Only EAGAIN (the socket's send buffer is full) waits in the backlog. ENOBUFS from
    #: a packet socket means the frame was dropped on its way out (the driver, a full
    #: veth peer, an egress rule; with PACKET_QDISC_BYPASS no qdisc holds it) while
    #: the socket stays writable, so waiting for writability would spin: it is
    #: counted as a transmit error and dropped, as a NIC's full ring drops.
    would_block: tuple[int, ...] = (errno.EAGAIN,)

    def __init__(self, sock: socket.socket, name: str, *, mac: bytes, offload: bool,
                 mtu: int, batch: int = 64, backlog: int = 256) -> None:
        """Wrap an already bound, non-blocking packet socket; use :meth:`open` instead."""
        super().__init__(_SocketDev(sock, name), offload=offload, mtu=mtu,
                         batch=batch, backlog=backlog)
        self.sock = sock
        #: The MAC the stack answers to on this interface (frames for others drop).
        self.mac = mac
        self.counters.update(dict.fromkeys(_RAW_COUNTERS, 0))
        self.link_down = False
        self.gone = False
        self._views = [memoryview(skb.buf)[HEADROOM - self._hlen:] for skb in self._ring]
        self._poll = select.epoll()
        self._poll.register(sock.fileno(), select.EPOLLIN)
        self._watching_out = False

    def fileno(self) -> int:
        """The descriptor the event loop watches: an epoll one holding the socket
        (see the module docstring); readable when frames, an error or, with a
        backlog, room to send are there."""
        return self._poll.fileno()

    def _watch_out(self, on: bool) -> None:
        if on != self._watching_out and self._fd >= 0:
            self._watching_out = on
            events = select.EPOLLIN | (select.EPOLLOUT if on else 0)
            self._poll.modify(self._fd, events)

    def _enqueue(self, data: bytes) -> bool:
        queued = super()._enqueue(data)
        self._watch_out(bool(self._backlog))
        return queued

    def flush_backlog(self) -> bool:
        """Write queued frames until the socket would block (TapDevice's); True when
        none are left."""
        done = super().flush_backlog()
        self._watch_out(not done)
        return done

    # -- opening ---------------------------------------------------------------
    @classmethod
    def open(cls, name: str, *, netns: str | None = None, offload: bool = True,  # type: ignore[override]
             batch: int = 64, backlog: int = 256, mac: bytes | None = None) -> RawDevice:
        """Bind a packet socket to the existing interface ``name`` (in ``netns``).

        ``mac``: the stack's MAC on it (None: the interface's own). FileNotFoundError
        when there is no such interface; OSError (EPERM) without CAP_NET_RAW.
        """
        return cls.open_queues(name, 1, netns=netns, offload=offload, batch=batch,
                               backlog=backlog, mac=mac)[0]

    @classmethod
    def open_queues(cls, name: str, count: int, *, netns: str | None = None,  # type: ignore[override]
                    offload: bool = True, batch: int = 64, backlog: int = 256,
                    mac: bytes | None = None) -> list[RawDevice]:
        """``count`` sockets on ``name``; more than one form a fanout group steered by
        port sum (stack/netdev/steer.py), socket ``i`` being worker ``i``'s queue."""
        if count < 1:
            raise ValueError("count must be >= 1")
        if not offload:
            # Without vnet headers a packet socket still gets the kernel's super-segments
            # and partial checksums, only without the header that says so.
            raise ValueError(f"raw interface {name}: --no-offload cannot work on a packet "
                             "socket (it gets super-segments and partial checksums "
                             "anyway); turn the interface's offloads off instead")
        out: list[RawDevice] = []
        try:
            with enter_netns(netns) if netns is not None else contextlib.nullcontext():
                for _ in range(count):
                    out.append(cls._bind_here(name, offload, batch, backlog, mac))
            if count > 1:
                join_fanout([d.sock for d in out], count)
                for d in out:  # frames read before the group existed went anywhere
                    d._discard_pending()
        except BaseException:
            for dev in out:
                dev.close()
            raise
        return out

    @classmethod
    def _bind_here(cls, name: str, offload: bool, batch: int, backlog: int,
                   mac: bytes | None) -> RawDevice:
        try:
            ifindex = socket.if_nametoindex(name)
        except OSError:
            raise FileNotFoundError(errno.ENODEV, f"no interface {name!r} "
                                    "(is the lab up? `tapsplice lab up --raw`)") from None
        # Protocol 0 until bound: a socket opened for ETH_P_ALL would take frames of
        # every interface in the namespace until bind() narrows it to ours.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            if offload:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            for opt in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            sock.bind((name, ETH_P_ALL))
            hw = sock.getsockname()[4]
            if mac is not None and mac != hw:
                # A real NIC filters unicast by address: ask it to accept ours too.
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_UNICAST, 6, mac)
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            ifr = fcntl.ioctl(sock, SIOCGIFMTU, struct.pack("16si", name.encode(), 0))
            mtu = struct.unpack_from("i", ifr, 16)[0]
            sock.setblocking(False)
            return cls(sock, name, mac=mac or hw, offload=offload, mtu=mtu, batch=batch,
                       backlog=backlog)
        except BaseException:
            sock.close()
            raise

    def _discard_pending(self) -> None:
        for _ in range(4096):  # bounded; a socket just bound holds a handful
            try:
                self.sock.recv(1)
            except OSError:
                return

    # -- receive ---------------------------------------------------------------
    def read_batch(self) -> list[SkBuff]:
        """Read up to ``batch`` frames without blocking (the ring's SkBuffs, valid
        until the next call). Oversized frames, bad or truncated vnet headers and
        frames for other MACs are counted and dropped; DeviceGone once the
        interface no longer exists."""
        if self._fd < 0:
            raise ValueError(f"read_batch on closed device {self.name}")
        if self._backlog:  # the loop woke us for room to send, perhaps
            self.flush_backlog()
        out: list[SkBuff] = []
        c = self.counters
        hlen = self._hlen
        mac = self.mac
        recv_into = self.sock.recv_into
        for _ in range(self.batch):
            i = len(out)
            try:
                n = recv_into(self._views[i], 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                self._receive_error(exc)
                break
            if n >= self._cap:
                c["rx_dropped_oversize"] += 1
                continue
            if n < hlen + ETH_HLEN:
                c["rx_dropped_bad_vnet" if n < hlen else "rx_errors"] += 1
                continue
            skb = self._ring[i]
            buf = skb.buf
            if not buf[HEADROOM] & 1 and buf[HEADROOM:HEADROOM + 6] != mac:
                c["rx_dropped_other_host"] += 1
                continue
            flen = n - hlen
            if not take_frame(skb, HEADROOM, hlen, flen):
                c["rx_dropped_bad_vnet"] += 1
                continue
            c["rx_frames"] += 1
            c["rx_bytes"] += flen
            out.append(skb)
        if out and self.link_down:
            self.link_down = False
            log.warning("%s: frames arrive again; the link is back", self.name)
        return out

    def _receive_error(self, exc: OSError) -> None:
        """The socket's pending error: the interface went down (once per event, the
        kernel clears it on read) or disappeared."""
        c = self.counters
        if exc.errno != errno.ENETDOWN:
            c["rx_errors"] += 1
            return
        c["rx_link_down"] += 1
        if not self.interface_exists():
            self.gone = True
            log.error("%s: the interface disappeared; the stack cannot use it any more",
                      self.name)
            raise DeviceGone(errno.ENODEV, f"raw interface {self.name} disappeared")
        if not self.link_down:
            self.link_down = True
            log.warning("%s: the interface went down; waiting for it to come back up",
                        self.name)

    def interface_exists(self) -> bool:
        """Whether the interface is still there (the kernel unbinds the socket from a
        deleted one: its index reads back as -1, and no name)."""
        try:
            return bool(self.sock.getsockname()[0])
        except OSError:
            return False

    # -- transmit --------------------------------------------------------------
    def write(self, skb: SkBuff) -> bool:
        """Send one frame as the TAP does (see TapDevice.write); a failure on a link
        that is down or gone is also counted as ``tx_link_errors``."""
        before = self.counters["tx_errors"]
        sent = super().write(skb)
        if self.counters["tx_errors"] != before and (self.link_down or self.gone
                                                     or not self.interface_exists()):
            self.counters["tx_link_errors"] += 1
        return sent

    def host_addresses(self, netns: str | None = None) -> list[str]:
        """Addresses the host has on this interface (IPv4 and IPv6): each one means the
        kernel may answer for the stack (ARP, ICMP, RST), so the command warns."""
        with enter_netns(netns) if netns is not None else contextlib.nullcontext():
            return interface_addresses(self.name)

    def kernel_drops(self) -> int:
        """Frames the kernel dropped because the socket's receive buffer was full, since
        the last call (PACKET_STATISTICS resets on read); added to
        ``rx_dropped_socket_full``."""
        try:
            stats = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        drops = struct.unpack("II", stats)[1]
        self.counters["rx_dropped_socket_full"] += drops
        return drops

    def close(self) -> None:
        """Close the socket (the interface stays as it is), counting the kernel's drops."""
        if self._fd >= 0:
            self.kernel_drops()
        super().close()
        self._poll.close()

    def __repr__(self) -> str:
        return f"RawDevice({self.name!r}, offload={self.offload}, mtu={self.mtu})"


def interface_addresses(name: str) -> list[str]:
    """The IPv4 and IPv6 addresses of interface ``name`` in the current namespace."""
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:  # SIOCGIFADDR: the primary IPv4 address
            ifr = fcntl.ioctl(s, SIOCGIFADDR, struct.pack("16s16x", name.encode()))
            out.append(socket.inet_ntoa(ifr[20:24]))
        except OSError:
            pass  # EADDRNOTAVAIL: none (ENODEV: no interface; the open says so)
    try:
        with open("/proc/thread-self/net/if_inet6") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 6 and parts[5] == name:
                    out.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(parts[0])))
    except OSError:
        pass  # no IPv6 in this kernel
    return out


def join_fanout(socks: list[socket.socket], count: int) -> None:
    """Make ``socks`` (bound to one interface, in worker order) a fanout group whose
    member for each frame is picked by the port-sum steering program."""
    from stack.netdev.steer import SteeringError, load_program, port_sum_program

    flags = PACKET_FANOUT_EBPF | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    # The first member gets an id no other group in the namespace has.
    socks[0].setsockopt(SOL_PACKET, PACKET_FANOUT,
                        (flags | PACKET_FANOUT_FLAG_UNIQUEID) << 16)
    group = socks[0].getsockopt(SOL_PACKET, PACKET_FANOUT) & 0xFFFF
    for s in socks[1:]:
        s.setsockopt(SOL_PACKET, PACKET_FANOUT, group | (flags << 16))
    # In a fanout hook the frame starts at its network header (the driver pulled the
    # Ethernet header off): the program reads the link layer through SKF_LL_OFF.
    prog = load_program(port_sum_program(count, at_network_header=True))
    try:
        socks[0].setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, struct.pack("i", prog))
    except OSError as e:
        raise SteeringError(e.errno, f"PACKET_FANOUT_DATA: {e.strerror}") from None
    finally:
        os.close(prog)  # the group holds its own reference


__all__ = ["FRAME_MAX", "HEADROOM", "VNET_HDR_LEN", "DeviceGone", "RawDevice",
           "interface_addresses", "join_fanout"]
