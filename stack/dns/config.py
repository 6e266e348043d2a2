"""Resolver settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ResolverConfig:
    """Timeouts, retry rounds and bounds of a :class:`~stack.dns.resolver.Resolver`."""

    timeout: float = 1.0
    """Seconds one try waits for a server's answer (UDP, or the whole TCP exchange)."""
    deadline: float = 5.0
    """Seconds one ``resolve()`` call may take in all, CNAME chasing included."""
    attempts: int = 2
    """Rounds over the server list."""
    max_ttl: float = 3600.0
    """Ceiling on how long a positive answer is cached."""
    max_negative_ttl: float = 300.0
    """Ceiling on how long NXDOMAIN/NODATA is cached (RFC 2308 §5)."""
    cache_size: int = 4096
    """Cache entries, one per (name, type); least recently used go first."""
    max_inflight: int = 256
    """Lookups on the network at once; more wait for a slot within their deadline."""
    max_cname: int = 8
    """CNAME records followed per resolve() call, across answers."""
    edns_payload: int = 1232
    """EDNS(0) UDP payload size advertised (RFC 6891 §6.2.5; 1232 avoids fragments)."""
    max_addresses: int = 64
    """Addresses returned per kind; the rest of a larger RRset is cut off."""

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.deadline <= 0:
            raise ValueError("timeout and deadline must be positive")
        if self.attempts < 1 or self.cache_size < 0 or self.max_inflight < 1:
            raise ValueError("attempts and max_inflight must be >= 1, cache_size >= 0")
        if self.max_cname < 0 or self.max_addresses < 1:
            raise ValueError("max_cname must be >= 0 and max_addresses >= 1")
        if not 512 <= self.edns_payload <= 65535:
            raise ValueError("edns_payload must be within 512..65535 (RFC 6891 §6.2.5)")
