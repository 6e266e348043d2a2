"""A bounded in-memory capture of a simulated network, written as pcap on demand.

Property tests run many examples and only a failing one needs its frames on disk, so
:class:`MemoryCapture` keeps the most recent frames in memory (bounded in bytes, the
oldest dropped first) and :meth:`MemoryCapture.write` saves them when asked. It has
the ``tx`` method :class:`~stack.sim.SimNetwork` calls for every frame it moves.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from stack.netdev.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, complete_checksum
from stack.netdev.pcap import PcapWriter
from stack.skbuff import SkBuff

__all__ = ["MemoryCapture", "artifacts_dir"]

#: Environment variable naming where failing runs leave their pcap files.
ARTIFACTS_ENV = "TAPSPLICE_TEST_ARTIFACTS"


def artifacts_dir(default: str | os.PathLike[str] = "test-artifacts") -> Path:
    """Where failing runs write pcaps: $TAPSPLICE_TEST_ARTIFACTS, else ``default``
    (relative to the working directory, where pytest writes its report)."""
    return Path(os.environ.get(ARTIFACTS_ENV) or default)


class MemoryCapture:
    """The latest frames sent on a simulated network, at most ``max_bytes`` of them."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self.frames: deque[tuple[float, bytes]] = deque()
        self.bytes = 0
        self.dropped = 0

    def tx(self, dev_name: str, skb: SkBuff, now: float) -> None:
        """Record a frame sent on ``dev_name`` (checksum completed, as on a wire)."""
        frame = bytearray(skb.tobytes())
        if (skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
                and skb.csum_start + skb.csum_offset + 2 <= len(frame)):
            complete_checksum(frame, 0, len(frame), skb.csum_start, skb.csum_offset)
        self.frames.append((now, bytes(frame)))
        self.bytes += len(frame)
        while self.bytes > self.max_bytes and len(self.frames) > 1:
            _, old = self.frames.popleft()
            self.bytes -= len(old)
            self.dropped += 1

    rx = tx

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the frames kept to ``path`` (parent directories created)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with PcapWriter(out) as w:
            for ts, frame in self.frames:
                w.write(frame, ts)
        return out
