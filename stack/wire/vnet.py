"""struct virtio_net_hdr, the offload metadata in front of every frame on a TAP
opened with IFF_VNET_HDR (Linux include/uapi/linux/virtio_net.h).

Without VIRTIO_F_VERSION_1 negotiation the TAP uses native byte order; on the
little-endian machines this project runs on that is the ``<`` layout below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from stack.wire.errors import BytesLike, WireError

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
#: UDP segmentation offload (USO), Linux 6.2+.
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80
GSO_TCPV4 = VIRTIO_NET_HDR_GSO_TCPV4
GSO_UDP = VIRTIO_NET_HDR_GSO_UDP
GSO_TCPV6 = VIRTIO_NET_HDR_GSO_TCPV6
GSO_UDP_L4 = VIRTIO_NET_HDR_GSO_UDP_L4
GSO_ECN = VIRTIO_NET_HDR_GSO_ECN

#: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset — for the fast path.
VNET = struct.Struct("<BBHHHH")

#: The six fields in :data:`VNET` order, as a frame kept aside stores them.
VnetFields = tuple[int, int, int, int, int, int]


class VnetCarrier(Protocol):
    """Anything that carries a frame's offload metadata (an SkBuff)."""

    vnet_flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def save_vnet(skb: VnetCarrier) -> VnetFields:
    """The offload metadata of ``skb``, for a copy of the frame kept for later
    (a frame waiting for a neighbour or for a splice to start relaying)."""
    return (skb.vnet_flags, skb.gso_type, skb.hdr_len, skb.gso_size, skb.csum_start,
            skb.csum_offset)


def restore_vnet(skb: VnetCarrier, fields: VnetFields) -> None:
    """Give ``skb`` the metadata :func:`save_vnet` (or ``VNET.unpack``) returned."""
    (skb.vnet_flags, skb.gso_type, skb.hdr_len, skb.gso_size, skb.csum_start,
     skb.csum_offset) = fields


@dataclass(slots=True)
class VirtioNetHdr:
    """The six fields of struct virtio_net_hdr.

    ``csum_start``/``csum_offset``: with NEEDS_CSUM, the device sums from csum_start
    to the end and stores the result at csum_start + csum_offset.
    """

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def parse(cls, buf: BytesLike) -> VirtioNetHdr:
        """Decode the first 10 bytes of ``buf`` (reason "vnet_truncated")."""
        if len(buf) < VNET_HDR_LEN:
            raise WireError("vnet_truncated", f"{len(buf)} bytes")
        return cls(*VNET.unpack_from(buf, 0))

    def emit_into(self, buf: bytearray | memoryview, offset: int = 0) -> None:
        """Write the 10-byte header into ``buf`` at ``offset``."""
        try:
            VNET.pack_into(buf, offset, self.flags, self.gso_type, self.hdr_len,
                           self.gso_size, self.csum_start, self.csum_offset)
        except struct.error as e:
            raise WireError("vnet_bad_field", str(e)) from None

    def to_bytes(self) -> bytes:
        """The 10-byte header."""
        out = bytearray(VNET_HDR_LEN)
        self.emit_into(out)
        return bytes(out)

