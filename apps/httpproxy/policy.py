"""Who may use the HTTP proxy, where it may connect, and its timeouts.

The access rules are the SOCKS proxy's (:class:`apps.socks.policy.Policy`: client
networks, users file, hosts mapping, destinations); this adds what only HTTP has:
the ports CONNECT may reach and the timeouts of an exchange.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.socks.policy import Policy, PolicyError, parse_port

__all__ = ["HttpPolicy", "PolicyError", "refusal_response"]


@dataclass(frozen=True)
class HttpPolicy(Policy):
    """The SOCKS access rules plus HTTP's. ``handshake_timeout`` is the time a client
    has to send a complete request head (slowloris bound)."""

    connect_ports: frozenset[int] = frozenset({443})
    keepalive_timeout: float = 30.0  # a kept-alive client connection with no request
    response_timeout: float = 30.0   # origin's response head, and each body read
    via: str = "tapsplice"
    #: Splice mode: response bodies of at least this many bytes (Content-Length) are
    #: spliced one way on kept-alive connections; smaller ones are copied.
    splice_min: int = 64 << 10

    def __post_init__(self) -> None:
        super().__post_init__()
        for port in self.connect_ports:
            parse_port(port)
        for name in ("keepalive_timeout", "response_timeout"):
            if not getattr(self, name) > 0:
                raise PolicyError(f"{name} {getattr(self, name)} must be positive")
        if self.splice_min < 0:
            raise PolicyError(f"splice_min {self.splice_min} must be >= 0")

    def connect_allowed(self, port: int) -> bool:
        """Whether CONNECT may reach ``port``."""
        return port in self.connect_ports


def refusal_response(reason: str) -> bytes:
    """The 503 (RFC 9110 §15.6.4) for a connection refused by a per-client limit,
    sent at once before the close."""
    body = f"503 Service Unavailable: {reason.replace('_', ' ')}\n".encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
            % (len(body), body))
