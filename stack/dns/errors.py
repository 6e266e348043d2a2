"""The resolver's exceptions.

All of them are :class:`OSError` subclasses, so a proxy that already handles a failed
``open_connection`` handles a failed lookup the same way; each names the host and why.
"""

from __future__ import annotations


class ResolverError(OSError):
    """A name could not be resolved; ``host`` is the name asked for, ``reason`` why."""

    def __init__(self, host: str, reason: str) -> None:
        # One argument only: OSError given two treats them as (errno, strerror).
        super().__init__(f"cannot resolve {host!r}: {reason}")
        self.host = host
        self.reason = reason


class NameNotFound(ResolverError):
    """The name does not exist (NXDOMAIN), has no address of the kind asked (NODATA),
    is not in the hosts mapping while no server is configured, or is not a valid name."""

    def __init__(self, host: str, reason: str, *, nxdomain: bool = False) -> None:
        super().__init__(host, reason)
        self.nxdomain = nxdomain


class ResolverTimeout(ResolverError):
    """The overall deadline passed without a definite answer."""


class ResolverFailure(ResolverError):
    """Every server failed definitely (SERVFAIL, REFUSED, NOTIMP, FORMERR, unreachable),
    or the answers formed a CNAME loop or a chain longer than allowed."""
