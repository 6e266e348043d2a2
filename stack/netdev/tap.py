"""TAP devices with virtio_net_hdr offloads: the stack's real link to the kernel.

With offload the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM, TSO4,
TSO6): every frame is preceded by a 10-byte virtio_net_hdr, the kernel hands over
TCP super-segments of up to 64 KB whose checksum it left partial, and it accepts
super-segments (gso_size set) from us, segmenting and checksumming them itself.
That keeps per-byte work out of Python (DESIGN.md, "Speed by design").

Frames are read into a ring of preallocated SkBuffs with os.readv; the vnet header
lands in the headroom right in front of ``skb.data``. Writes that would block are
copied into a bounded backlog that the driver flushes when the fd is writable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections import deque

import pytun

from stack.netdev.netns import enter_netns
from stack.netdev.offload import (
    ETH_HLEN,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET,
    VNET_HDR_LEN,
    complete_checksum,
    take_frame,
    vnet_error,
)
from stack.netdev.taplock import TapLock, lock_tap
from stack.skbuff import SkBuff

# linux/if_tun.h: _IOW('T', 216, int) and _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04

#: Room in front of a received frame: the vnet header plus space to push headers.
HEADROOM = 128
#: Largest frame the kernel hands over: a 64 KB IP super-segment behind an
#: Ethernet header with one VLAN tag.
FRAME_MAX = 65535 + ETH_HLEN + 4

_WOULD_BLOCK = (errno.EAGAIN, errno.ENOBUFS)
_COUNTERS = (
    "rx_frames", "rx_bytes", "rx_errors", "rx_dropped_oversize", "rx_dropped_bad_vnet",
    "tx_frames", "tx_bytes", "tx_errors", "tx_backlogged", "tx_dropped_backlog_full",
    "tx_dropped_bad_vnet", "tx_dropped_gso",
)
_INT = struct.Struct("i")


class TapDevice:
    """An open, non-blocking TAP device (see the module docstring)."""

    #: Write errors that mean "try again when writable": the frame goes to the backlog.
    would_block: tuple[int, ...] = _WOULD_BLOCK

    def __init__(self, dev: pytun.TunTapDevice, *, offload: bool, mtu: int,
                 batch: int, backlog: int) -> None:
        """Wrap an already configured pytun device; use :meth:`open` instead."""
        if batch < 1 or backlog < 0:
            raise ValueError("batch must be >= 1 and backlog >= 0")
        self._dev = dev
        self._fd: int = dev.fileno()
        self.name: str = dev.name
        self.offload = offload
        self.mtu = mtu
        self.batch = batch
        self.backlog_limit = backlog
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._backlog: deque[bytes] = deque()
        self._hlen = VNET_HDR_LEN if offload else 0
        # One more byte than the largest frame: a read that fills the buffer may
        # have been cut short, so it is dropped rather than trusted.
        size = HEADROOM + FRAME_MAX + 1
        self._ring = [SkBuff(size, HEADROOM) for _ in range(batch)]
        first = HEADROOM - self._hlen
        self._iov = [[memoryview(skb.buf)[first:]] for skb in self._ring]
        self._cap = size - first
        #: Opened as one queue of a multiqueue device.
        self.multi_queue = False
        #: This process's claim on the device (stack/netdev/taplock.py).
        self._lock: TapLock | None = None

    @classmethod
    def open(cls, name: str, *, netns: str | None = None, offload: bool = True,
             batch: int = 64, backlog: int = 256, multi_queue: bool | None = None
             ) -> TapDevice:
        """Attach to the existing TAP ``name`` (entering ``netns`` for the open).

        ``multi_queue``: True attaches one more queue of a device created with
        ``multi_queue`` (stack/netdev/steer.py); False requires a single-queue device;
        None (the default) takes whichever the device is.

        FileNotFoundError when no such device exists (nothing is created);
        pytun.Error when it exists but is not a TAP, is busy, or has the other kind
        of queues.
        """
        return cls.open_queues(name, 1, netns=netns, offload=offload, batch=batch,
                               backlog=backlog, multi_queue=multi_queue)[0]

    @classmethod
    def open_queues(cls, name: str, count: int, *, netns: str | None = None,
                    offload: bool = True, batch: int = 64, backlog: int = 256,
                    multi_queue: bool | None = None) -> list[TapDevice]:
        """Open ``count`` queues of the TAP ``name``, in queue order (see :meth:`open`).

        More than one queue needs a device created with ``multi_queue``.
        """
        if count < 1 or (count > 1 and multi_queue is False):
            raise ValueError("one queue, or multi_queue for more")
        if count > 1:
            multi_queue = True
        out: list[TapDevice] = []
        lock: TapLock | None = None
        try:
            with enter_netns(netns) if netns is not None else contextlib.nullcontext():
                _check_exists(name)
                # One stack per TAP: a second process would attach one more queue of a
                # multi_queue device and get half of its frames (taplock.py).
                lock = lock_tap(name, netns).hold()
                for _ in range(count):
                    dev = cls._open_here(name, offload, batch, backlog, multi_queue)
                    dev._lock = lock.hold()
                    out.append(dev)
                    multi_queue = out[0].multi_queue
        except BaseException:
            for dev in out:
                dev.close()
            raise
        finally:
            if lock is not None:
                lock.release()  # the devices hold it from here on
        return out

    @classmethod
    def _open_here(cls, name: str, offload: bool, batch: int, backlog: int,
                   multi_queue: bool | None) -> TapDevice:
        if multi_queue is None:
            try:
                return cls._open_here(name, offload, batch, backlog, False)
            except pytun.Error as e:
                # TUNSETIFF refuses (EINVAL) a flags mismatch on IFF_MULTI_QUEUE
                if e.args and e.args[0] != errno.EINVAL:
                    raise
            return cls._open_here(name, offload, batch, backlog, True)
        _check_exists(name)
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if offload else 0)
        if multi_queue:
            flags |= pytun.IFF_MULTI_QUEUE
        dev = pytun.TunTapDevice(name=name, flags=flags)
        try:
            fd = dev.fileno()
            if offload:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_LEN))
                feats = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
            else:
                feats = 0  # a persistent device may keep offloads from an earlier open
            fcntl.ioctl(fd, TUNSETOFFLOAD, feats)
            os.set_blocking(fd, False)
            mtu = int(dev.mtu)  # read through a socket: must happen in the namespace
            tap = cls(dev, offload=offload, mtu=mtu, batch=batch, backlog=backlog)
            tap.multi_queue = bool(multi_queue)
            return tap
        except BaseException:
            dev.close()
            raise

    def fileno(self) -> int:
        """The device's file descriptor (for select/epoll/the event loop)."""
        return self._fd

    # -- receive -------------------------------------------------------------
    def read_batch(self) -> list[SkBuff]:
        """Read up to ``batch`` frames without blocking.

        The returned SkBuffs belong to the device's ring: they stay valid only until
        the next call. Oversized frames and frames with a bad vnet header are
        counted and dropped.
        """
        if self._fd < 0:
            raise ValueError(f"read_batch on closed device {self.name}")
        out: list[SkBuff] = []
        c = self.counters
        hlen = self._hlen
        for _ in range(self.batch):
            i = len(out)
            try:
                n = os.readv(self._fd, self._iov[i])
            except BlockingIOError:
                break
            except OSError:
                c["rx_errors"] += 1
                continue
            if n >= self._cap:
                c["rx_dropped_oversize"] += 1
                continue
            if n < hlen + ETH_HLEN:
                c["rx_errors"] += 1
                continue
            skb = self._ring[i]
            flen = n - hlen
            if not take_frame(skb, HEADROOM, hlen, flen):
                c["rx_dropped_bad_vnet"] += 1
                continue
            c["rx_frames"] += 1
            c["rx_bytes"] += flen
            out.append(skb)
        return out

    # -- transmit ------------------------------------------------------------
    def write(self, skb: SkBuff) -> bool:
        """Send the frame ``skb.data..skb.tail``; False when it was dropped.

        With offload a vnet header built from the skb's fields is written into the
        headroom (or sent as a separate iovec when there is none). If the device
        would block, a copy goes to the backlog; no reference to ``skb`` is kept.
        """
        if self._fd < 0:
            raise ValueError(f"write on closed device {self.name}")
        if self.offload:
            return self._write_vnet(skb)
        return self._write_plain(skb)

    def _write_vnet(self, skb: SkBuff) -> bool:
        n = skb.tail - skb.data
        fields = (skb.vnet_flags, skb.gso_type, skb.hdr_len, skb.gso_size,
                  skb.csum_start, skb.csum_offset)
        if vnet_error(fields[0], fields[1], fields[3], fields[4], fields[5], n):
            self.counters["tx_dropped_bad_vnet"] += 1
            return False
        if skb.data - skb.head >= VNET_HDR_LEN:
            start = skb.data - VNET_HDR_LEN
            VNET.pack_into(skb.buf, start, *fields)
            return self._send(memoryview(skb.buf)[start:skb.tail], n)
        return self._send_two(VNET.pack(*fields), memoryview(skb.buf)[skb.data:skb.tail])

    def _write_plain(self, skb: SkBuff) -> bool:
        n = skb.tail - skb.data
        if n < ETH_HLEN or skb.gso_size:
            # The device cannot segment: a super-segment here is the sender's bug.
            self.counters["tx_dropped_gso" if skb.gso_size else "tx_errors"] += 1
            return False
        frame: bytearray | memoryview = memoryview(skb.buf)[skb.data:skb.tail]
        if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            if skb.csum_start + skb.csum_offset + 2 > n:
                self.counters["tx_dropped_bad_vnet"] += 1
                return False
            frame = bytearray(frame)  # finish the checksum on a copy, not the caller's buffer
            complete_checksum(frame, 0, n, skb.csum_start, skb.csum_offset)
        return self._send(frame, n)

    def _send(self, data: bytearray | memoryview, flen: int) -> bool:
        if self._backlog:  # keep frames in order behind the ones already waiting
            return self._enqueue(bytes(data))
        try:
            os.write(self._fd, data)
        except OSError as exc:
            if exc.errno in self.would_block:
                return self._enqueue(bytes(data))
            self.counters["tx_errors"] += 1
            return False
        self.counters["tx_frames"] += 1
        self.counters["tx_bytes"] += flen
        return True

    def _send_two(self, hdr: bytes, frame: memoryview) -> bool:
        if self._backlog:
            return self._enqueue(hdr + frame)
        try:
            os.writev(self._fd, (hdr, frame))
        except OSError as exc:
            if exc.errno in self.would_block:
                return self._enqueue(hdr + frame)
            self.counters["tx_errors"] += 1
            return False
        self.counters["tx_frames"] += 1
        self.counters["tx_bytes"] += len(frame)
        return True

    def _enqueue(self, data: bytes) -> bool:
        if len(self._backlog) >= self.backlog_limit:
            self.counters["tx_dropped_backlog_full"] += 1
            return False
        self._backlog.append(data)
        self.counters["tx_backlogged"] += 1
        return True

    def backlog_len(self) -> int:
        """Frames waiting in the transmit backlog."""
        return len(self._backlog)

    def flush_backlog(self) -> bool:
        """Write queued frames until the device would block; True when none are left."""
        q = self._backlog
        c = self.counters
        while q:
            data = q[0]
            try:
                os.write(self._fd, data)
            except OSError as exc:
                if exc.errno in self.would_block:
                    return False
                c["tx_errors"] += 1
            else:
                c["tx_frames"] += 1
                c["tx_bytes"] += len(data) - self._hlen
            q.popleft()
        return True

    def close(self) -> None:
        """Release the device (a persistent TAP stays; its carrier goes down)."""
        if self._fd >= 0:
            self._dev.close()
            self._fd = -1
            self._backlog.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> TapDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TapDevice({self.name!r}, offload={self.offload}, mtu={self.mtu})"


def _check_exists(name: str) -> None:
    """FileNotFoundError unless a device ``name`` exists in the current namespace:
    TUNSETIFF on a missing name would create a new, transient device here (possibly
    in the root namespace), so only one that exists is attached to."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise FileNotFoundError(errno.ENODEV, f"no TAP device {name!r} "
                                "(is the lab up?)") from None
