"""One side of a proxied exchange: a stream with the bytes read but not yet parsed.

Heads are parsed from :attr:`BufferedStream.buf`; body bytes come from that buffer
first, then from the stream, so a pipelined next request or early tunnel data is
never lost. Reads are bounded in size; timeouts are the caller's business.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from apps.httpproxy.parser import ChunkedDecoder, Framing, HttpError

READ_SIZE = 256 * 1024
T = TypeVar("T")


class Abort(Exception):
    """The exchange cannot go on and no response can be sent any more (the response
    head was already sent): the client connection is reset."""


class PeerClosed(ConnectionError):
    """The peer closed (or reset) before a complete message arrived."""


class BufferedStream:
    """A StreamReader/StreamWriter pair with a parse buffer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.received = 0   # bytes read from the stream

    async def fill(self) -> bool:
        """Read more into the buffer; False at EOF."""
        try:
            data = await self.reader.read(READ_SIZE)
        except ConnectionError as e:
            raise PeerClosed(str(e)) from None
        self.received += len(data)
        self.buf += data
        return bool(data)

    async def read_head(self, parse: Callable[[bytearray], tuple[T, int] | None]) -> T:
        """The next head; :class:`PeerClosed` if the stream ends first."""
        while (got := parse(self.buf)) is None:
            if not await self.fill():
                raise PeerClosed("closed before a complete head")
        head, n = got
        del self.buf[:n]
        return head

    async def read_some(self) -> bytes:
        """Buffered bytes, or the next read of the stream (b"" at EOF)."""
        if not self.buf and not await self.fill():
            return b""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def body(self, framing: Framing, length: int,
                   error: type[HttpError]) -> AsyncIterator[tuple[bytes, bytes]]:
        """The body as (raw bytes, payload bytes) pieces, by its framing. A body cut
        short raises ``error``; the bytes after the body stay in :attr:`buf`."""
        if framing is Framing.LENGTH:
            left = length
            while left:
                data = await self.read_some()
                if not data:
                    raise error(f"body ended {left} bytes short")
                piece, rest = data[:left], data[left:]
                self.buf[:0] = rest
                left -= len(piece)
                yield piece, piece
        elif framing is Framing.CHUNKED:
            decoder = ChunkedDecoder(error)
            while not decoder.done:
                if not self.buf and not await self.fill():
                    raise error("chunked body cut short")
                payload, used = decoder.feed(self.buf)
                raw = bytes(self.buf[:used])
                del self.buf[:used]
                if not used and not decoder.done:
                    if not await self.fill():   # a line split across reads
                        raise error("chunked body cut short")
                    continue
                yield raw, payload
        elif framing is Framing.CLOSE:
            while data := await self.read_some():
                yield data, data
