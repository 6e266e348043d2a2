"""A DNS stub resolver over the stack (RFC 1035, RFC 5452, RFC 2308, RFC 7766)."""

from stack.dns.config import ResolverConfig
from stack.dns.errors import NameNotFound, ResolverError, ResolverFailure, ResolverTimeout
from stack.dns.resolver import Resolver

__all__ = [
    "NameNotFound",
    "Resolver",
    "ResolverConfig",
    "ResolverError",
    "ResolverFailure",
    "ResolverTimeout",
]
