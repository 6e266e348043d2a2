"""Socket buffers: one preallocated buffer with movable data boundaries, and queues.

An :class:`SkBuff` owns one ``bytearray`` and four offsets into it, as Linux's
``struct sk_buff`` does::

    0 .. head ........ data ============ tail ........ end
          headroom       payload (len)     tailroom

Headers are prepended with :meth:`SkBuff.push` into the headroom and stripped with
:meth:`SkBuff.pull`; payload is appended with :meth:`SkBuff.put` into the tailroom
and cut with :meth:`SkBuff.trim`. Nothing is ever copied by these operations.

The buffer also carries the virtio_net_hdr metadata of a frame (GSO type and size,
checksum offload offsets) so that a super-segment keeps its offload state while it
travels through the stack, and the TCP control block fields (``seq``, ``end_seq``,
``tcp_flags``, ``when``) that Linux keeps in ``TCP_SKB_CB``.

:class:`SkbQueue` is a doubly linked list of SkBuffs, like ``sk_buff_head``: O(1)
append, prepend, pop from either end, unlink of any member, and splicing of a whole
queue into another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class SkbError(ValueError):
    """Misuse of an SkBuff or SkbQueue (moving past a boundary, double enqueue)."""


#: Bookkeeping overhead charged to every buffer in ``truesize`` (object + slots),
#: so that memory accounting of many small buffers is not a fiction.
SKB_OVERHEAD = 200


class SkBuff:
    """A buffer with head/data/tail/end offsets over one ``bytearray``."""

    __slots__ = (
        "buf", "head", "data", "tail", "end",
        "next", "prev", "queue",
        # virtio_net_hdr metadata (stack/wire/vnet.py): offload state of the frame
        "vnet_flags", "gso_type", "gso_size", "csum_start", "csum_offset", "hdr_len",
        # TCP control block (TCP_SKB_CB): sequence range, flags, send time
        "seq", "end_seq", "tcp_flags", "when", "retrans", "sacked",
        # free-form per-layer scratch (device index, network header offset, ...)
        "dev", "network_off", "transport_off",
    )

    def __init__(self, size: int, headroom: int = 0, buf: bytearray | None = None) -> None:
        if size < 0 or headroom < 0 or headroom > size:
            raise SkbError(f"bad SkBuff size {size} / headroom {headroom}")
        if buf is None:
            buf = bytearray(size)
        elif len(buf) < size:
            raise SkbError("buffer smaller than the requested size")
        self.buf = buf
        self.head = 0
        self.data = headroom
        self.tail = headroom
        self.end = size
        self.next: SkBuff | None = None
        self.prev: SkBuff | None = None
        self.queue: SkbQueue | None = None
        self.vnet_flags = 0
        self.gso_type = 0
        self.gso_size = 0
        self.csum_start = 0
        self.csum_offset = 0
        self.hdr_len = 0
        self.seq = 0
        self.end_seq = 0
        self.tcp_flags = 0
        self.when = 0.0
        self.retrans = 0
        self.sacked = 0
        #: The interface a received buffer came in on (set on local delivery).
        self.dev: Any = None
        self.network_off = 0
        self.transport_off = 0

    @classmethod
    def from_bytes(cls, payload: bytes | bytearray | memoryview, headroom: int = 0,
                   tailroom: int = 0) -> SkBuff:
        """A new buffer holding a copy of ``payload`` with the given spare room."""
        n = len(payload)
        skb = cls(headroom + n + tailroom, headroom)
        skb.buf[headroom:headroom + n] = payload
        skb.tail = headroom + n
        return skb

    # -- sizes ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.tail - self.data

    @property
    def len(self) -> int:
        """Bytes between data and tail."""
        return self.tail - self.data

    @property
    def headroom(self) -> int:
        """Free bytes in front of data."""
        return self.data - self.head

    @property
    def tailroom(self) -> int:
        """Free bytes after tail."""
        return self.end - self.tail

    @property
    def truesize(self) -> int:
        """Memory charged for this buffer: the whole allocation plus overhead."""
        return self.end - self.head + SKB_OVERHEAD

    # -- moving boundaries ---------------------------------------------------
    def reserve(self, n: int) -> None:
        """Move data and tail forward by ``n`` on an empty buffer (make headroom)."""
        if self.tail != self.data:
            raise SkbError("reserve on a non-empty buffer")
        if n < 0 or self.tail + n > self.end:
            raise SkbError(f"reserve {n} past end")
        self.data += n
        self.tail += n

    def push(self, n: int) -> memoryview:
        """Grow the data area by ``n`` bytes at the front; return the new front bytes."""
        if n < 0 or n > self.data - self.head:
            raise SkbError(f"push {n} past head (headroom {self.data - self.head})")
        self.data -= n
        return memoryview(self.buf)[self.data:self.data + n]

    def pull(self, n: int) -> memoryview:
        """Shrink the data area by ``n`` bytes at the front; return the removed bytes."""
        if n < 0 or n > self.tail - self.data:
            raise SkbError(f"pull {n} past tail (len {self.tail - self.data})")
        old = self.data
        self.data += n
        return memoryview(self.buf)[old:old + n]

    def put(self, n: int) -> memoryview:
        """Grow the data area by ``n`` bytes at the end; return the new end bytes."""
        if n < 0 or n > self.end - self.tail:
            raise SkbError(f"put {n} past end (tailroom {self.end - self.tail})")
        old = self.tail
        self.tail += n
        return memoryview(self.buf)[old:old + n]

    def put_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append a copy of ``data`` at the tail."""
        n = len(data)
        if n > self.end - self.tail:
            raise SkbError(f"put {n} past end (tailroom {self.end - self.tail})")
        self.buf[self.tail:self.tail + n] = data
        self.tail += n

    def trim(self, length: int) -> None:
        """Cut the data area to ``length`` bytes (no-op when already shorter)."""
        if length < 0:
            raise SkbError("trim to a negative length")
        if length < self.tail - self.data:
            self.tail = self.data + length

    def view(self) -> memoryview:
        """A zero-copy view of the data area."""
        return memoryview(self.buf)[self.data:self.tail]

    def tobytes(self) -> bytes:
        """A copy of the data area (slow path, tests)."""
        return bytes(self.buf[self.data:self.tail])

    def clear_vnet(self) -> None:
        """Forget offload metadata: a plain frame with a complete checksum."""
        self.vnet_flags = self.gso_type = self.gso_size = 0
        self.csum_start = self.csum_offset = self.hdr_len = 0

    def copy_vnet_from(self, other: SkBuff) -> None:
        """Take over another buffer's offload metadata."""
        self.vnet_flags = other.vnet_flags
        self.gso_type = other.gso_type
        self.gso_size = other.gso_size
        self.csum_start = other.csum_start
        self.csum_offset = other.csum_offset
        self.hdr_len = other.hdr_len

    def __repr__(self) -> str:
        return (f"SkBuff(head={self.head}, data={self.data}, tail={self.tail}, "
                f"end={self.end}, seq={self.seq}, end_seq={self.end_seq})")


class SkbQueue:
    """A doubly linked queue of SkBuffs with O(1) insert/unlink anywhere.

    A buffer can be in at most one queue at a time. ``qlen`` counts buffers,
    ``bytes`` the sum of their ``len`` at the time they were queued, and
    ``truesize`` the memory charged to them; owners compare these with bounds.
    """

    __slots__ = ("first", "last", "qlen", "truesize")

    def __init__(self) -> None:
        self.first: SkBuff | None = None
        self.last: SkBuff | None = None
        self.qlen = 0
        self.truesize = 0

    def __len__(self) -> int:
        return self.qlen

    def __bool__(self) -> bool:
        return self.qlen > 0

    def __iter__(self) -> Iterator[SkBuff]:
        skb = self.first
        while skb is not None:
            nxt = skb.next  # allow unlinking the current buffer while iterating
            yield skb
            skb = nxt

    def reversed(self) -> Iterator[SkBuff]:
        """Iterate from the tail towards the head."""
        skb = self.last
        while skb is not None:
            prv = skb.prev
            yield skb
            skb = prv

    def _claim(self, skb: SkBuff) -> None:
        if skb.queue is not None:
            raise SkbError("SkBuff is already on a queue")
        skb.queue = self
        self.qlen += 1
        self.truesize += skb.truesize

    def append(self, skb: SkBuff) -> None:
        """Add at the tail."""
        self._claim(skb)
        skb.next = None
        skb.prev = self.last
        if self.last is None:
            self.first = skb
        else:
            self.last.next = skb
        self.last = skb

    def prepend(self, skb: SkBuff) -> None:
        """Add at the head."""
        self._claim(skb)
        skb.prev = None
        skb.next = self.first
        if self.first is None:
            self.last = skb
        else:
            self.first.prev = skb
        self.first = skb

    def insert_after(self, where: SkBuff, skb: SkBuff) -> None:
        """Insert ``skb`` right after ``where`` (a member of this queue)."""
        if where.queue is not self:
            raise SkbError("insert_after: anchor is not on this queue")
        self._claim(skb)
        skb.prev = where
        skb.next = where.next
        if where.next is None:
            self.last = skb
        else:
            where.next.prev = skb
        where.next = skb

    def insert_before(self, where: SkBuff, skb: SkBuff) -> None:
        """Insert ``skb`` right before ``where`` (a member of this queue)."""
        if where.queue is not self:
            raise SkbError("insert_before: anchor is not on this queue")
        self._claim(skb)
        skb.next = where
        skb.prev = where.prev
        if where.prev is None:
            self.first = skb
        else:
            where.prev.next = skb
        where.prev = skb

    def unlink(self, skb: SkBuff) -> None:
        """Remove ``skb`` (a member of this queue) from wherever it is."""
        if skb.queue is not self:
            raise SkbError("unlink: SkBuff is not on this queue")
        if skb.prev is None:
            self.first = skb.next
        else:
            skb.prev.next = skb.next
        if skb.next is None:
            self.last = skb.prev
        else:
            skb.next.prev = skb.prev
        skb.next = skb.prev = None
        skb.queue = None
        self.qlen -= 1
        self.truesize -= skb.truesize

    def peek(self) -> SkBuff | None:
        """The head buffer, or None."""
        return self.first

    def peek_tail(self) -> SkBuff | None:
        """The tail buffer, or None."""
        return self.last

    def pop(self) -> SkBuff:
        """Remove and return the head buffer; SkbError when empty."""
        skb = self.first
        if skb is None:
            raise SkbError("pop from an empty queue")
        self.unlink(skb)
        return skb

    def pop_tail(self) -> SkBuff:
        """Remove and return the tail buffer; SkbError when empty."""
        skb = self.last
        if skb is None:
            raise SkbError("pop_tail from an empty queue")
        self.unlink(skb)
        return skb

    def splice_tail(self, other: SkbQueue) -> None:
        """Move every buffer of ``other`` to the tail of this queue; ``other`` empties."""
        if other is self:
            raise SkbError("cannot splice a queue into itself")
        if other.first is None:
            return
        skb: SkBuff | None = other.first
        while skb is not None:
            skb.queue = self
            skb = skb.next
        if self.last is None:
            self.first = other.first
        else:
            self.last.next = other.first
            other.first.prev = self.last
        self.last = other.last
        self.qlen += other.qlen
        self.truesize += other.truesize
        other.first = other.last = None
        other.qlen = 0
        other.truesize = 0

    def purge(self) -> int:
        """Drop every buffer; return how many there were."""
        n = self.qlen
        while self.first is not None:
            self.unlink(self.first)
        return n
