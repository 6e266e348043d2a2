"""vnet header validation and software checksum completion."""

from __future__ import annotations

import pytest
from netdev_frames import partial_udp_frame, udp_checksum_ok, udp_frame

from stack.netdev.offload import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    complete_checksum,
    vnet_error,
)


@pytest.mark.parametrize("args", [
    (0, 0, 0, 0, 0, 60),
    (VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 34, 16, 54),  # field ends exactly at the end
    (VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 60),
    (1, VIRTIO_NET_HDR_GSO_TCPV4, 1448, 34, 16, 30000),
    (1, VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN, 1428, 54, 16, 30000),
])
def test_good_headers(args: tuple[int, ...]) -> None:
    assert vnet_error(*args) is None


@pytest.mark.parametrize("args,needle", [
    ((0, 0, 0, 0, 0, 13), "runt"),
    ((0x10, 0, 0, 0, 0, 60), "flags"),
    ((VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 34, 16, 51), "outside"),
    ((0, 7, 1448, 0, 0, 60), "gso type"),
    ((0, VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 0, 60), "gso_size"),
])
def test_bad_headers(args: tuple[int, ...], needle: str) -> None:
    err = vnet_error(*args)
    assert err is not None and needle in err


@pytest.mark.parametrize("size", [0, 1, 2, 17, 1000, 1001])
def test_complete_checksum_matches_a_full_computation(size: int) -> None:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    frame = bytearray(b"\xaa" * 8 + partial_udp_frame(payload) + b"\xbb" * 4)
    complete_checksum(frame, 8, len(frame) - 4, 34, 6)
    assert bytes(frame[8:-4]) == udp_frame(payload)
    assert udp_checksum_ok(bytes(frame[8:-4]))
    assert frame[:8] == b"\xaa" * 8 and frame[-4:] == b"\xbb" * 4


def test_zero_result_is_sent_as_ffff() -> None:
    # Payload chosen so that the complemented sum is 0: the field must carry 0xFFFF
    # (RFC 768: a zero UDP checksum means "none").
    base = bytearray(partial_udp_frame(b"\x00\x00"))
    complete_checksum(base, 0, len(base), 34, 6)
    c = int.from_bytes(base[40:42], "big")
    # Put the would-be checksum into the payload: the new sum becomes 0xFFFF.
    frame = bytearray(partial_udp_frame(c.to_bytes(2, "big")))
    complete_checksum(frame, 0, len(frame), 34, 6)
    assert frame[40:42] == b"\xff\xff"
    assert udp_checksum_ok(bytes(frame))
