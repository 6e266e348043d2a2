"""A TPACKET_V3 receive ring on a packet socket, for measuring it against RawDevice's
one ``recv_into`` per frame (the README's raw-socket section has the figures).

With TPACKET_V3 the kernel copies frames into blocks of a ring shared through mmap and
hands over a whole block at once (when it is full or after ``retire_ms``); reading
needs no system call per frame, only one poll per block. The stack needs each frame
in an SkBuff (a bytearray it rewrites in place), so :meth:`RingReader.read_batch`
copies every frame out of the ring into a preallocated SkBuff, vnet header included,
and gives blocks back as soon as they are read.

This is a bench tool, not a device of the stack: it has no transmit side (the
forwarder that uses it sends with ``os.write`` on the same socket).
"""

from __future__ import annotations

import mmap
import socket
import struct

from stack.netdev.netns import enter_netns
from stack.netdev.raw import (
    ETH_P_ALL,
    PACKET_IGNORE_OUTGOING,
    PACKET_QDISC_BYPASS,
    PACKET_VNET_HDR,
    SOL_PACKET,
)
from stack.netdev.tap import FRAME_MAX, HEADROOM
from stack.skbuff import SkBuff
from stack.wire.vnet import VNET, VNET_HDR_LEN

PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
_REQ3 = struct.Struct("7I")
_BLOCK = struct.Struct("III")  # at 8: block_status, num_pkts, offset_to_first_pkt
_FRAME = struct.Struct("I8xII4xH")  # next_offset, snaplen, len, tp_mac


class RingReader:
    """A packet socket with a TPACKET_V3 receive ring on one interface."""

    def __init__(self, name: str, netns: str | None, *, block_size: int = 1 << 20,
                 blocks: int = 64, retire_ms: int = 1, batch: int = 64) -> None:
        if netns is not None:
            with enter_netns(netns):
                self.sock = self._socket(name, block_size, blocks, retire_ms)
        else:
            self.sock = self._socket(name, block_size, blocks, retire_ms)
        self.block_size, self.blocks = block_size, blocks
        self.map = mmap.mmap(self.sock.fileno(), block_size * blocks)
        self.view = memoryview(self.map)
        self.block = 0
        self._pending: list[tuple[int, int, int]] = []  # (block, frame offset, left)
        self.batch = batch
        size = HEADROOM + FRAME_MAX + 1
        self._ring = [SkBuff(size, HEADROOM) for _ in range(batch)]
        self.frames = 0

    @staticmethod
    def _socket(name: str, block_size: int, blocks: int, retire_ms: int) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        # frame_size only matters for V1/V2; V3 packs frames of any length.
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
            block_size, blocks, 1 << 16, block_size * blocks >> 16, retire_ms, 0, 0))
        s.bind((name, ETH_P_ALL))
        s.setblocking(False)
        return s

    def fileno(self) -> int:
        """The socket (poll it: readable when a block is handed over)."""
        return self.sock.fileno()

    def read_batch(self) -> list[SkBuff]:
        """Up to ``batch`` frames copied out of ready blocks into the SkBuff ring."""
        out: list[SkBuff] = []
        view, bs = self.view, self.block_size
        while len(out) < self.batch:
            if not self._pending:
                base = self.block * bs
                status, num, first = _BLOCK.unpack_from(self.map, base + 8)
                if not status & TP_STATUS_USER:
                    break
                self._pending.append((self.block, base + first, num))
            blk, off, left = self._pending.pop()
            while left and len(out) < self.batch:
                nxt, snap, _len, mac = _FRAME.unpack_from(self.map, off)
                skb = self._ring[len(out)]
                start = off + mac - VNET_HDR_LEN
                skb.buf[HEADROOM - VNET_HDR_LEN:HEADROOM + snap] = view[start:off + mac + snap]
                fl, gt, hl, gs, cs, co = VNET.unpack_from(skb.buf, HEADROOM - VNET_HDR_LEN)
                skb.vnet_flags, skb.gso_type, skb.hdr_len = fl, gt, hl
                skb.gso_size, skb.csum_start, skb.csum_offset = gs, cs, co
                skb.data, skb.tail = HEADROOM, HEADROOM + snap
                out.append(skb)
                off += nxt
                left -= 1
            if left:
                self._pending.append((blk, off, left))
            else:  # every frame of the block copied out: the kernel may refill it
                struct.pack_into("I", self.map, blk * bs + 8, TP_STATUS_KERNEL)
                self.block = (blk + 1) % self.blocks
        self.frames += len(out)
        return out

    def close(self) -> None:
        """Unmap the ring and close the socket."""
        self.view.release()
        self.map.close()
        self.sock.close()
