"""The access log in Squid's native format.

One line per request: ``time elapsed client code/status bytes method URL user
hierarchy/peer type`` where time is seconds since the epoch with milliseconds,
elapsed is milliseconds, bytes are those sent to the client, and code is the
cache result (TCP_MISS, TCP_HIT, TCP_MEM_HIT, TCP_REFRESH_HIT, TCP_REFRESH_MISS,
TCP_TUNNEL, TCP_DENIED; NONE when no request could be read).
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.logsafe import field


@dataclass
class Entry:
    """What the access log records about one request."""

    client: str
    start: float         # wall clock, seconds since the epoch
    method: str = "NONE"
    url: str = "-"
    code: str = "NONE"
    status: int = 0
    bytes: int = 0       # sent to the client, heads included
    user: str = "-"
    peer: str = "-"      # origin address, when contacted
    type: str = "-"
    elapsed: float = 0.0
    #: Loop time of the request's start (its first byte on a kept-alive connection):
    #: ``elapsed`` counts from it.
    began: float = 0.0
    note: str = ""

    @property
    def hierarchy(self) -> str:
        """HIER_DIRECT/addr when the origin was contacted, else HIER_NONE/-."""
        return f"HIER_DIRECT/{self.peer}" if self.peer != "-" else "HIER_NONE/-"

    def line(self) -> str:
        """The Squid native line. Method, URL, user and type come from the client or
        the origin: each is escaped as one field (apps/logsafe.py), so one request is
        one line of printable ASCII with the fields where Squid's readers expect them."""
        return (f"{self.start:.3f} {int(self.elapsed * 1000):6d} {field(self.client)} "
                f"{self.code}/{self.status:03d} {self.bytes} {field(self.method)} "
                f"{field(self.url)} {field(self.user)} {field(self.hierarchy)} "
                f"{field(self.type)}")
