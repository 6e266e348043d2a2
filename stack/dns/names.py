"""Names before the network: validation, IP literals and the hosts mapping."""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name

from stack.dns.errors import NameNotFound

KIND_FAMILY = {"A": 4, "AAAA": 6}
"""The address family each supported query type returns."""


def hosts_key(name: str) -> str:
    """The hosts mapping's form of a name: lower case, no trailing dot."""
    return name.rstrip(".").lower()


def parse_name(host: str) -> dns.name.Name:
    """``host`` as an absolute DNS name, or NameNotFound saying what is wrong with it.

    dnspython enforces RFC 1035 §2.3.4 (labels of at most 63 octets, names of at most
    255) and IDNA-encodes non-ASCII names; the root alone is no host name.
    """
    if not host or host.strip(".") == "":
        raise NameNotFound(host, "empty name")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in host):
        raise NameNotFound(host, "name contains whitespace or control characters")
    try:
        return dns.name.from_text(host)
    except dns.name.LabelTooLong:
        raise NameNotFound(host, "a label is longer than 63 octets (RFC 1035 §2.3.4)") from None
    except dns.name.NameTooLong:
        raise NameNotFound(host, "name is longer than 255 octets (RFC 1035 §2.3.4)") from None
    except dns.name.EmptyLabel:
        raise NameNotFound(host, "name has an empty label") from None
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise NameNotFound(host, f"invalid name ({exc})") from None


def literal(host: str) -> str | None:
    """The address an IP literal stands for, as text, or None if ``host`` is a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class HostsTable:
    """Exact, case-insensitive name -> address entries, consulted before any server."""

    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self._entries: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        for name, addr in (entries or {}).items():
            self._entries[hosts_key(name)] = ipaddress.ip_address(addr)

    def lookup(self, host: str, kinds: tuple[str, ...]) -> list[str]:
        """Addresses for ``host`` of the families in ``kinds`` (empty if none)."""
        addr = self._entries.get(hosts_key(host))
        if addr is None:
            return []
        wanted = {KIND_FAMILY[kind] for kind in kinds}
        return [str(addr)] if addr.version in wanted else []

    def __len__(self) -> int:
        return len(self._entries)
