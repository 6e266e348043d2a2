"""The stack's TCP entry point while splicing is in use: the layer-3.5 fast path.

:class:`SpliceDemux` takes the place of TCP in the core's protocol table once a
:class:`~splice.splicer.Splicer` is made (docs/splice.md §3): a segment of a pair whose
two interfaces both relay goes straight to the relay; everything else to TCP.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from stack.skbuff import SkBuff
from stack.wire.fields import TCP_ACK, TCP_FLAGS
from stack.wire.tcp import FIN, RST, SYN, TCP_MIN_HLEN, verify_tcp_checksum
from stack.wire.vnet import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM

if TYPE_CHECKING:
    from splice.splicer import Splicer

_L = struct.Struct("!L")
_HH = struct.Struct("!HH")
_TRUSTED = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID


class SpliceDemux:
    """The stack's TCP entry point once splicing is in use.

    A segment of a pair whose two interfaces both relay, carrying no SYN, FIN or RST,
    is relayed straight away: no header parsing into objects, no TCB lookup, no TCP
    bookkeeping — the layer-3.5 path. Everything else goes to TCP (and through the
    TCB's input hook to the splicer's full state handling)."""

    def __init__(self, splicer: Splicer) -> None:
        self.splicer = splicer
        self.tcp = splicer.tcp

    def input(self, skb: SkBuff, src: bytes, dst: bytes, now: float) -> None:
        """One TCP segment from the IP layer (data at the TCP header)."""
        buf = skb.buf
        t = skb.data
        if skb.tail - t >= TCP_MIN_HLEN and not buf[t + TCP_FLAGS] & (SYN | FIN | RST):
            sport, dport = _HH.unpack_from(buf, t)
            side = self.splicer.fast.get((dst, dport, src, sport))
            if side is not None:
                if not skb.vnet_flags & _TRUSTED and not verify_tcp_checksum(
                        src, dst, skb.view()):
                    self.splicer.counters["drop.relay_bad_checksum"] += 1
                    return
                flags = buf[t + TCP_FLAGS]
                ack = _L.unpack_from(buf, t + TCP_ACK)[0]
                self.splicer._check_fin_acked(side, flags, ack, now)
                self.splicer._relay(side.other, skb, flags, ack, now)
                self.splicer.counters["fast_path_segments"] += 1
                return
        self.tcp.input(skb, src, dst, now)

    def begin_batch(self) -> None:
        """TCP's output batching (stack.core Stack.begin_batch)."""
        self.tcp.begin_batch()

    def end_batch(self, now: float) -> None:
        """TCP's output batching."""
        self.tcp.end_batch(now)

    def next_deadline(self) -> float | None:
        """TCP's timers."""
        return self.tcp.next_deadline()

    def on_timer(self, now: float) -> None:
        """TCP's timers."""
        self.tcp.on_timer(now)

    def icmp_error(self, *args, **kwargs) -> None:
        """ICMP errors are TCP's."""
        self.tcp.icmp_error(*args, **kwargs)
