"""pcap capture of frames crossing the stack's devices (dpkt.pcap, Ethernet).

Frames handed over with a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) are
written with the checksum completed, so tshark does not flag every offloaded
segment; super-segments are written as they are (one large frame), which is what
tcpdump on the TAP shows too.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType

import dpkt

from stack.netdev.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, complete_checksum
from stack.skbuff import SkBuff

__all__ = ["PcapWriter", "PcapTee", "read_pcap"]

_REC = struct.Struct("=IIII")


class PcapWriter:
    """A pcap file of Ethernet frames (linktype 1, microsecond timestamps)."""

    def __init__(self, path: str | os.PathLike[str], snaplen: int = 262144) -> None:
        self.path = os.fspath(path)
        self.snaplen = snaplen
        self.frames = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        try:
            self._writer = dpkt.pcap.Writer(self._file, snaplen=snaplen,
                                            linktype=dpkt.pcap.DLT_EN10MB)
        except BaseException:
            self._file.close()
            raise

    def write(self, frame: bytes | bytearray | memoryview, ts: float) -> None:
        """Append one frame (cut to ``snaplen``) stamped ``ts`` seconds."""
        if self._file.closed:
            raise ValueError("write to a closed PcapWriter")
        n = len(frame)
        cap = min(n, self.snaplen)
        sec = int(ts)
        usec = min(round((ts - sec) * 1e6), 999_999)
        # dpkt's writepkt records the cut length as the original one; a record
        # header of our own keeps the true length (pcap record: ts_sec, ts_usec,
        # incl_len, orig_len, in the file header's byte order, which dpkt makes native).
        self._file.write(_REC.pack(sec, usec, cap, n))
        self._file.write(frame[:cap])
        self.frames += 1

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PcapTee:
    """Records every frame received or sent on any device into one writer."""

    def __init__(self, writer: PcapWriter) -> None:
        self.writer = writer
        #: frames seen per (device name, "rx" or "tx")
        self.counts: dict[tuple[str, str], int] = {}

    def rx(self, dev_name: str, skb: SkBuff, now: float) -> None:
        """Record a frame received on ``dev_name``."""
        self._record(dev_name, "rx", skb, now)

    def tx(self, dev_name: str, skb: SkBuff, now: float) -> None:
        """Record a frame sent on ``dev_name``."""
        self._record(dev_name, "tx", skb, now)

    def close(self) -> None:
        """Close the underlying writer (idempotent)."""
        self.writer.close()

    def __enter__(self) -> PcapTee:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _record(self, dev_name: str, direction: str, skb: SkBuff, now: float) -> None:
        frame: bytes | bytearray = skb.tobytes()
        if (skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
                and skb.csum_start + skb.csum_offset + 2 <= len(frame)):
            frame = bytearray(frame)
            complete_checksum(frame, 0, len(frame), skb.csum_start, skb.csum_offset)
        self.writer.write(frame, now)
        key = (dev_name, direction)
        self.counts[key] = self.counts.get(key, 0) + 1


def read_pcap(path: str | os.PathLike[str]) -> list[tuple[float, bytes]]:
    """All (timestamp, frame) records of a pcap file."""
    with open(path, "rb") as f:
        return [(float(ts), bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
