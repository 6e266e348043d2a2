"""TCP Tap (docs/splice.md §6): a copy of one direction of a splice, in order, for the
application (to fill a cache, say), while the relay goes on unchanged.

The tap sees each relayed segment before it is rewritten: its sequence number (in the
arriving connection's space) and its payload. Segments may arrive out of order, twice
or overlapping (the peers retransmit end to end); the tap reassembles them into the
byte stream from the splice's base point on. It is bounded: when the application does
not take the bytes fast enough, or holes stay open with too much buffered above them,
the tap gives up (``truncated``) — the relay never waits for it.
"""

from __future__ import annotations

from collections.abc import Callable

from stack import seq


class Tap:
    """In-order reassembly of one direction of a splice."""

    def __init__(self, start_seq: int, *, limit: int = 4 << 20,
                 on_data: Callable[[bytes], None] | None = None,
                 on_end: Callable[[bool], None] | None = None) -> None:
        self.next_seq = start_seq          # the next byte the stream needs
        self.limit = limit                 # bytes held (in order, unread + out of order)
        self.pending: dict[int, bytes] = {}  # out-of-order pieces by sequence number
        self.pending_bytes = 0
        self.delivered = 0
        self.truncated = False
        self.ended = False
        self.fin_seq: int | None = None
        self.on_data = on_data
        self.on_end = on_end

    def feed(self, seg_seq: int, payload: bytes | memoryview, fin: bool = False) -> None:
        """One relayed segment's payload (copied only as far as it is new)."""
        if self.truncated or self.ended:
            return
        n = len(payload)
        if fin:
            self.fin_seq = seq.add(seg_seq, n)
        if n:
            off = seq.sub(self.next_seq, seg_seq)
            if off >= n:
                pass                                   # all of it was seen already
            elif off >= 0:
                self._deliver(bytes(payload[off:]))
                self._drain()
            elif self.pending_bytes + n > self.limit:
                self._give_up()
                return
            elif seg_seq not in self.pending or len(self.pending[seg_seq]) < n:
                self.pending_bytes += n - len(self.pending.get(seg_seq, b""))
                self.pending[seg_seq] = bytes(payload)
        if self.fin_seq is not None and self.next_seq == self.fin_seq and not self.pending:
            self._end(True)

    def _drain(self) -> None:
        while self.pending:
            progressed = False
            for s in list(self.pending):
                piece = self.pending[s]
                off = seq.sub(self.next_seq, s)
                if off < 0:
                    continue
                del self.pending[s]
                self.pending_bytes -= len(piece)
                if off < len(piece):
                    self._deliver(piece[off:])
                progressed = True
            if not progressed:
                return

    def _deliver(self, data: bytes) -> None:
        self.next_seq = seq.add(self.next_seq, len(data))
        self.delivered += len(data)
        if self.on_data is not None:
            self.on_data(data)

    def _give_up(self) -> None:
        self.truncated = True
        self.pending.clear()
        self.pending_bytes = 0
        self._end(False)

    def _end(self, complete: bool) -> None:
        if not self.ended:
            self.ended = True
            if self.on_end is not None:
                self.on_end(complete)

    def close(self) -> None:
        """The splice ended (reset or teardown) before the stream's FIN."""
        if not self.ended:
            self._give_up() if not self.fin_seq else self._end(
                self.next_seq == self.fin_seq)
