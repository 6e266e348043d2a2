"""Destination names for the proxies: the hosts mapping first, then the stack's DNS
resolver (stack/dns/), with one outcome both proxies turn into their own replies.

SOCKS answers every failure with reply 0x04 (host unreachable); the HTTP proxy
answers an unknown name or failing servers with 502 and a resolver timeout with 504
(RFC 9110 §15.6.3 and §15.6.5: the proxy could not get an answer in time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from apps.socks.policy import Policy
from apps.socks.protocol import Address
from stack.dns import NameNotFound, ResolverError, ResolverTimeout

#: ``await resolver(name)``: the addresses of ``name`` (stack.aio.TapStack.resolve);
#: ``await resolver(name, kinds=("A", "AAAA"))`` for both families.
Resolve = Callable[..., Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of resolving one destination: an address, or why not."""

    ip: str | None
    #: "" (resolved), "unknown" (no such name), "timeout", "failure" (servers failed)
    failure: str = ""
    note: str = ""
    #: Every usable address, ``ip`` first (a name can have several: apps/eyeballs.py).
    addresses: tuple[str, ...] = ()


def resolver_of(api: Any) -> Resolve | None:
    """The stack's resolver, when ``api`` has one (a TapStack: ``net.resolve``)."""
    resolve = getattr(api, "resolve", None)
    return resolve if callable(resolve) else None


async def lookup(address: Address, policy: Policy, resolve: Resolve | None, *,
                 ipv6: bool = False) -> Lookup:
    """The address ``address`` stands for: literals and the hosts mapping (--hosts,
    --host) answer at once; other names go to ``resolve`` (the DNS resolver).

    With ``ipv6`` (a caller that reaches IPv6 destinations) the resolver is asked
    for A and AAAA records and every address of both families is kept, IPv4 first
    (the caller orders them, apps/eyeballs.py); without, A records only, as before."""
    ip = policy.resolve(address)
    if ip is not None:
        return Lookup(ip, addresses=(ip,))
    if resolve is None:
        return Lookup(None, "unknown", f"unknown host name {address.host!r}")
    try:
        if ipv6:
            addrs = await resolve(address.host, kinds=("A", "AAAA"))
        else:
            addrs = await resolve(address.host)
    except NameNotFound as e:
        return Lookup(None, "unknown", f"unknown host name {address.host!r}: {e.reason}")
    except ResolverTimeout:
        return Lookup(None, "timeout", f"resolving {address.host!r} timed out")
    except ResolverError as e:
        return Lookup(None, "failure", f"resolving {address.host!r} failed: {e.reason}")
    usable = [a for a in addrs if ipv6 or ":" not in a]
    if not usable:
        family = "IP" if ipv6 else "IPv4"
        return Lookup(None, "unknown", f"{address.host!r} has no {family} address")
    return Lookup(usable[0], note=f"resolved {address.host} to {', '.join(usable[:4])}"
                  + (f" and {len(usable) - 4} more" if len(usable) > 4 else ""),
                  addresses=tuple(usable))
