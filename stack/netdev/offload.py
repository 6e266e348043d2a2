"""virtio_net_hdr metadata shared by the devices: layout, validation, checksum help.

The header layout and constants come from stack/wire/vnet.py (re-exported here
for the devices). Completing a partial checksum in software is what a device
without checksum offload must do for a frame marked VIRTIO_NET_HDR_F_NEEDS_CSUM
(Linux calls it skb_checksum_help).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from stack.wire.checksum import ones_sum
from stack.wire.fields import ETH_HLEN
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VNET,
    VNET_HDR_LEN,
)

__all__ = [
    "ETH_HLEN", "VNET", "VNET_HDR_LEN", "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_F_DATA_VALID", "VIRTIO_NET_HDR_GSO_NONE", "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6", "VIRTIO_NET_HDR_GSO_UDP", "VIRTIO_NET_HDR_GSO_UDP_L4", "VIRTIO_NET_HDR_GSO_ECN",
    "vnet_error", "complete_checksum", "take_frame",
]

if TYPE_CHECKING:
    from stack.skbuff import SkBuff

_KNOWN_FLAGS = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID | 4  # 4: RSC_INFO
_GSO_TYPES = (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_TCPV6,
              VIRTIO_NET_HDR_GSO_UDP_L4)
_U16 = struct.Struct("!H")


def vnet_error(flags: int, gso_type: int, gso_size: int, csum_start: int,
               csum_offset: int, length: int) -> str | None:
    """Why a frame of ``length`` bytes with this header is unusable, or None if it is fine.

    The checks are the ones the kernel applies to a header written to a TAP
    (virtio_net_hdr_to_skb): known flags and GSO types, a checksum field inside
    the frame, and a non-zero segment size for a GSO frame.
    """
    if length < ETH_HLEN:
        return "runt frame"
    if flags & ~_KNOWN_FLAGS:
        return f"unknown vnet flags {flags:#x}"
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and csum_start + csum_offset + 2 > length:
        return "checksum field outside the frame"
    base = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if base != VIRTIO_NET_HDR_GSO_NONE:
        if base not in _GSO_TYPES:
            return f"unknown gso type {gso_type:#x}"
        if gso_size == 0:
            return "gso frame without gso_size"
    return None


def take_frame(skb: SkBuff, headroom: int, hlen: int, flen: int) -> bool:
    """Make ``skb`` the frame of ``flen`` bytes read at ``headroom`` behind a vnet header
    of ``hlen`` bytes (0: none): the header's fields go to the SkBuff. False when the
    header is unusable (:func:`vnet_error`); the device counts that drop."""
    if hlen:
        fl, gt, hl, gs, cs, co = VNET.unpack_from(skb.buf, headroom - hlen)
        if vnet_error(fl, gt, gs, cs, co, flen) is not None:
            return False
        skb.vnet_flags, skb.gso_type, skb.hdr_len = fl, gt, hl
        skb.gso_size, skb.csum_start, skb.csum_offset = gs, cs, co
    else:
        skb.clear_vnet()
    skb.data = headroom
    skb.tail = headroom + flen
    return True


def complete_checksum(buf: bytearray | memoryview, start: int, end: int,
                      csum_start: int, csum_offset: int) -> None:
    """Finish a partial checksum in place, as a device without checksum offload does.

    ``buf[start:end]`` is the Ethernet frame; ``csum_start`` is relative to
    ``start``. The checksum field holds the folded pseudo-header sum; the sum from
    csum_start to the end of the frame (field included) is complemented and
    stored. A result of 0 is sent as 0xFFFF (RFC 768: zero means "no checksum"
    for UDP; for TCP both encodings verify).
    """
    field = start + csum_start + csum_offset
    s = ones_sum(memoryview(buf)[start + csum_start:end])
    c = (~s) & 0xFFFF
    _U16.pack_into(buf, field, c or 0xFFFF)
