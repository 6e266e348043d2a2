"""The one error type of the wire layer.

Every parser in :mod:`stack.wire` rejects malformed input by raising
:class:`WireError` and nothing else, so that the receive path can catch a single
type, bump the drop counter named by :attr:`WireError.reason` and move on.
"""

from __future__ import annotations

#: What the parsers accept. Parsers slice these without copying the payload.
BytesLike = bytes | bytearray | memoryview


class WireError(ValueError):
    """Malformed or unsupported bytes on the wire.

    ``reason`` is a short snake_case key ("eth_truncated", "ipv4_bad_checksum",
    "tcp_bad_option", ...) meant to be used directly as a drop counter name.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        # Both arguments go to args so that the error pickles and copies faithfully.
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason
