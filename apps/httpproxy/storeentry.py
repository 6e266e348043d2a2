"""A stored response (RFC 9111 §3) as both halves of the cache keep it."""

from __future__ import annotations

from dataclasses import dataclass

from apps.httpproxy.parser import Headers

#: Variants (secondary keys, RFC 9111 §4.1) kept per request URI.
MAX_VARIANTS = 8
#: Per-entry overhead counted against the byte bound (head, bookkeeping).
ENTRY_OVERHEAD = 256

VaryKey = tuple[tuple[str, str], ...]


@dataclass
class StoredResponse:
    """One stored response: its head, body and the times of §4.2.3."""

    uri: str
    vary_key: VaryKey
    status: int
    reason: str
    headers: Headers
    body: bytes
    request_time: float
    response_time: float

    @property
    def size(self) -> int:
        """Bytes counted against the store's bound."""
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) \
            + ENTRY_OVERHEAD

    @property
    def key(self) -> tuple[str, VaryKey]:
        """The cache key: request URI and secondary key."""
        return self.uri, self.vary_key

    def head_json(self) -> dict:
        """The entry without its body, as JSON-able data."""
        return {"uri": self.uri, "vary_key": [list(p) for p in self.vary_key],
                "status": self.status, "reason": self.reason,
                "headers": [list(f) for f in self.headers],
                "request_time": self.request_time, "response_time": self.response_time,
                "body_len": len(self.body)}


def entry_from_json(item: object, body: bytes) -> StoredResponse | None:
    """The entry :meth:`StoredResponse.head_json` described, with ``body``; None when
    ``item`` is not such a description."""
    try:
        assert isinstance(item, dict)
        if item["body_len"] != len(body):
            return None
        return StoredResponse(
            uri=str(item["uri"]),
            vary_key=tuple((str(n), str(v)) for n, v in item["vary_key"]),
            status=int(item["status"]), reason=str(item["reason"]),
            headers=Headers((str(n), str(v)) for n, v in item["headers"]),
            body=body, request_time=float(item["request_time"]),
            response_time=float(item["response_time"]))
    except (AssertionError, KeyError, TypeError, ValueError):
        return None
