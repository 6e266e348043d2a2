"""The stack's StreamReader: asyncio's reading API, with a buffer of its own.

:class:`StackStreamReader` is an :class:`asyncio.StreamReader` (so StreamWriter,
StreamReaderProtocol and ``isinstance`` checks accept it) that keeps its bytes in its
own buffer instead of asyncio's private one. That buffer is what a splice hands over
to the stack (:meth:`take_buffered`) and what a tap bounds (:meth:`buffered_size`),
both through public methods. Reading behaves as asyncio's reader does: ``read``,
``readexactly``, ``readuntil``, ``readline``, ``async for``, the line limit, pausing the
transport above twice the limit and resuming it at or below the limit.

One difference: a read that resumes a paused transport checks the buffer again before
it waits, so bytes the transport hands over synchronously on resume wake it (with
asyncio's reader they arrive before its waiter exists and wake nobody).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sized

    from typing_extensions import Buffer

    class _Separator(Buffer, Sized, Protocol):
        """What readuntil searches for: a bytes-like object with a length (as asyncio
        types it)."""

#: asyncio's default line limit (64 KiB).
DEFAULT_LIMIT = 2 ** 16


class StackStreamReader(asyncio.StreamReader):
    """An asyncio StreamReader whose buffer belongs to this class (see the module
    docstring). None of asyncio's private reader state is used: the base class is
    initialised only so that asyncio accepts the object."""

    def __init__(self, limit: int = DEFAULT_LIMIT,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(limit=limit, loop=loop)
        self._line_limit = limit
        self._evloop = loop
        self._data = bytearray()
        self._ended = False
        self._error: Exception | None = None
        self._wait_fut: asyncio.Future[None] | None = None
        self._source: Any = None
        self._source_paused = False

    def __repr__(self) -> str:
        info = ["StackStreamReader", f"{len(self._data)} bytes"]
        if self._ended:
            info.append("eof")
        if self._error is not None:
            info.append(f"exception={self._error!r}")
        if self._source_paused:
            info.append("paused")
        return f"<{' '.join(info)}>"

    # -- the protocol side ------------------------------------------------------------
    def set_transport(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport (to pause and resume it); a transport that takes
        readers (stack.streams.TcpTransport) learns this one."""
        if self._source is not None:
            raise RuntimeError("transport already set")
        self._source = transport
        bind = getattr(transport, "bind_reader", None)
        if bind is not None:
            bind(self)

    # asyncio's stub allows any iterable of ints; like asyncio's reader in practice,
    # this one is fed bytes-like objects only (they are appended as a buffer).
    def feed_data(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        """Append received bytes; pause the transport above twice the limit."""
        if self._ended:
            raise RuntimeError("feed_data after feed_eof")
        if not data:
            return
        self._data += data
        self._wake()
        if (self._source is not None and not self._source_paused
                and len(self._data) > 2 * self._line_limit):
            try:
                self._source.pause_reading()
            except NotImplementedError:
                self._source = None  # cannot be paused: buffer everything
            else:
                self._source_paused = True

    def feed_eof(self) -> None:
        """The stream has ended (what is buffered can still be read)."""
        self._ended = True
        self._wake()

    def set_exception(self, exc: Exception) -> None:
        """Fail the current and later reads with ``exc``."""
        self._error = exc
        fut, self._wait_fut = self._wait_fut, None
        if fut is not None and not fut.cancelled():
            fut.set_exception(exc)

    def exception(self) -> Exception | None:
        """The error set by :meth:`set_exception`, if any."""
        return self._error

    def at_eof(self) -> bool:
        """True once the stream has ended and everything was read."""
        return self._ended and not self._data

    # -- hand-over (splice, tap) ---------------------------------------------------------
    def buffered_size(self) -> int:
        """Bytes received and not yet read."""
        return len(self._data)

    def take_buffered(self, limit: int | None = None) -> bytes:
        """Remove and return up to ``limit`` (None: all) bytes received and not yet
        read. The transport is not resumed: a splice taking over the connection
        decides what is read from it next."""
        n = len(self._data) if limit is None else max(0, min(limit, len(self._data)))
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    def put_back(self, data: bytes) -> None:
        """Return ``data`` (taken by :meth:`take_buffered`) to the front of the buffer."""
        if data:
            self._data[:0] = data
            self._wake()

    # -- waiting ---------------------------------------------------------------------------
    def _wake(self) -> None:
        fut, self._wait_fut = self._wait_fut, None
        if fut is not None and not fut.cancelled():
            fut.set_result(None)

    def _resume_if_drained(self) -> None:
        if self._source_paused and len(self._data) <= self._line_limit:
            self._source_paused = False
            self._source.resume_reading()

    async def _wait(self, what: str) -> None:
        """Wait for more data, the end of stream or an error."""
        if self._wait_fut is not None:
            raise RuntimeError(f"{what}() called while another coroutine is already "
                               "waiting for incoming data")
        if self._source_paused:
            # Waiting while paused would never end (readexactly beyond the limit).
            self._source_paused = False
            self._source.resume_reading()
            if self._error is not None:
                raise self._error
            if self._data or self._ended:
                return  # the transport handed bytes over as it resumed
        loop = self._evloop or asyncio.get_running_loop()
        self._wait_fut = loop.create_future()
        try:
            await self._wait_fut
        finally:
            self._wait_fut = None

    # -- reading ---------------------------------------------------------------------------
    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes as soon as any are there (b"" at the end of stream); with
        ``n`` < 0 everything up to the end of stream."""
        if self._error is not None:
            raise self._error
        if n == 0:
            return b""
        if n < 0:
            parts = []
            while block := await self.read(self._line_limit):
                parts.append(block)
            return b"".join(parts)
        if not self._data and not self._ended:
            await self._wait("read")
        out = bytes(self._data[:n])
        del self._data[:n]
        self._resume_if_drained()
        return out

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; IncompleteReadError if the stream ends first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if self._error is not None:
            raise self._error
        if n == 0:
            return b""
        while len(self._data) < n:
            if self._ended:
                partial = bytes(self._data)
                self._data.clear()
                raise asyncio.IncompleteReadError(partial, n)
            await self._wait("readexactly")
        out = bytes(self._data[:n])
        del self._data[:n]
        self._resume_if_drained()
        return out

    async def readuntil(self, separator: _Separator = b"\n") -> bytes:
        """Bytes up to and including ``separator``. LimitOverrunError (the data stays
        buffered) when more than the limit comes before it; IncompleteReadError (the
        buffer is emptied into it) when the stream ends first."""
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        if self._error is not None:
            raise self._error
        offset = 0  # no separator starts before this offset
        while True:
            size = len(self._data)
            if size - offset >= seplen:
                at = self._data.find(separator, offset)
                if at != -1:
                    break
                offset = size + 1 - seplen
                if offset > self._line_limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset)
            if self._ended:
                partial = bytes(self._data)
                self._data.clear()
                raise asyncio.IncompleteReadError(partial, None)
            await self._wait("readuntil")
        if at > self._line_limit:
            raise asyncio.LimitOverrunError(
                "Separator is found, but chunk is longer than limit", at)
        out = bytes(self._data[:at + seplen])
        del self._data[:at + seplen]
        self._resume_if_drained()
        return out

    async def readline(self) -> bytes:
        """One line with its b"\\n" (a last line without it at the end of stream);
        ValueError, dropping the line, when it is longer than the limit."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            if self._data.startswith(b"\n", e.consumed):
                del self._data[:e.consumed + 1]
            else:
                self._data.clear()
            self._resume_if_drained()
            raise ValueError(e.args[0]) from e
