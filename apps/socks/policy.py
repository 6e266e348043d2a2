"""Who may use the proxy, for what, and how names are resolved.

A :class:`Policy` is plain data with a few checks; the server asks it whether a
client may connect, whether credentials are right (RFC 1929), what address a
DOMAINNAME stands for and whether a destination is allowed. Names come from a
hosts file or ``--host name=addr`` first, then from the stack's DNS resolver
(apps/names.py); an unknown name is answered with "host unreachable" (RFC 1928 §6,
X'04').
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self, TypeVar

from apps.socks.protocol import Address, Atyp, parse_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Bounds of the files the policy reads (a policy is small; a huge file is a mistake).
MAX_FILE_BYTES = 1 << 20
MAX_ENTRIES = 10_000


#: Passwords are compared as keyed digests: fixed length whatever the password, and
#: the key (new in every process) means the digests in memory are worth nothing alone.
_DIGEST_KEY = os.urandom(32)
#: What an unknown user's password is compared with: the same work as a known one.
_NO_USER = hmac.digest(_DIGEST_KEY, os.urandom(32), hashlib.sha256)


def _digest(secret: bytes) -> bytes:
    return hmac.digest(_DIGEST_KEY, secret, hashlib.sha256)


class PolicyError(ValueError):
    """A bad rule, users file or hosts file (with the file and line when known)."""


def parse_network(text: str) -> Network:
    """``A.B.C.D/N`` (or a single address) as a network."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        raise PolicyError(f"bad network {text!r}: {e}") from None


def parse_port(text: str | int) -> int:
    """A TCP port number 1..65535."""
    try:
        port = int(text)
    except ValueError:
        raise PolicyError(f"bad port {text!r}") from None
    if not 1 <= port <= 0xFFFF:
        raise PolicyError(f"port {port} out of range 1..65535")
    return port


def _norm_name(name: str) -> str:
    # Names are case-insensitive (RFC 4343) and a trailing dot only marks them absolute.
    return name.strip().rstrip(".").lower()


def _check_addr(addr: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(addr.strip()))
    except ValueError:
        raise PolicyError(f"{where}: {addr!r} is not an IP address") from None


def parse_host_mapping(text: str) -> tuple[str, str]:
    """``name=addr`` as (normalised name, address)."""
    name, sep, addr = text.partition("=")
    if not sep or not _norm_name(name):
        raise PolicyError(f"host mapping {text!r}: expected NAME=ADDRESS")
    return _norm_name(name), _check_addr(addr, f"host mapping {text!r}")


def _lines(path: str | Path) -> Iterable[tuple[int, str]]:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PolicyError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{path}: {e}") from None
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        count += 1
        if count > MAX_ENTRIES:
            raise PolicyError(f"{path}: more than {MAX_ENTRIES} entries")
        yield number, line


def load_users(path: str | Path) -> dict[str, str]:
    """A users file: one ``user:password`` per line; lines starting with ``#`` and
    blank lines are skipped. The password is everything after the first colon, so
    it may itself hold colons, ``#`` and spaces. Both are 1..255 bytes (RFC 1929 §2)."""
    users: dict[str, str] = {}
    for number, line in _lines(path):
        where = f"{path}:{number}"
        user, sep, password = line.partition(":")
        if not sep:
            raise PolicyError(f"{where}: expected user:password")
        for what, value in (("user", user), ("password", password)):
            if not 1 <= len(value.encode()) <= 255:
                raise PolicyError(f"{where}: {what} must be 1 to 255 bytes")
        if user in users:
            raise PolicyError(f"{where}: user {user!r} given twice")
        users[user] = password
    return users


def load_hosts(path: str | Path) -> dict[str, str]:
    """A hosts file: ``/etc/hosts`` lines (``ADDRESS NAME [NAME...]``, ``#`` starts a
    comment) or ``NAME=ADDRESS`` lines. Returns normalised name -> address."""
    hosts: dict[str, str] = {}
    for number, line in _lines(path):
        where = f"{path}:{number}"
        line = line.partition("#")[0].strip()
        if "=" in line:
            name, addr = parse_host_mapping(line)
            hosts[name] = addr
            continue
        words = line.split()
        if len(words) < 2:
            raise PolicyError(f"{where}: expected ADDRESS NAME... or NAME=ADDRESS")
        addr = _check_addr(words[0], where)
        for name in words[1:]:
            hosts[_norm_name(name)] = addr
    return hosts


def attached_networks(interfaces: Iterable) -> list[Network]:
    """The subnets of a stack's interfaces (anything with ``.network``)."""
    return [iface.network for iface in interfaces]


def _api_stack(api: Any) -> Any:
    """The stack behind ``api`` (TapStack or TcpApi), or None."""
    stack = getattr(api, "stack", None)
    return stack if stack is not None else getattr(getattr(api, "tcp", None), "ip", None)


def api_interfaces(api: Any) -> list:
    """The interfaces of the stack behind ``api`` (TapStack or TcpApi), if it says."""
    return list(getattr(_api_stack(api), "interfaces", []))


def ipv6_networks(api: Any, iface: Any = None) -> list[Network]:
    """The IPv6 prefixes of the stack's addresses (of ``iface`` only, when given),
    link-local ones left out (RFC 4291 §2.5.6: they are never routed)."""
    table = getattr(getattr(_api_stack(api), "ip6", None), "addresses", None)
    if table is None:
        return []
    out: list[Network] = []
    for a in list(table.addresses.values()):
        net = ipaddress.IPv6Network((a.addr, a.prefixlen), strict=False)
        if (iface is None or a.iface is iface) and not net.is_link_local and net not in out:
            out.append(net)
    return out


def listen_interface(api: Any, host: str) -> Any | None:
    """The interface of the stack behind ``api`` that owns the address ``host``
    (None for 0.0.0.0, :: or an address the stack does not have)."""
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError:
        return None
    if len(packed) == 16:
        table = getattr(getattr(_api_stack(api), "ip6", None), "addresses", None)
        entry = table.lookup(packed) if table is not None else None
        return entry.iface if entry is not None else None
    return next((i for i in api_interfaces(api) if i.addr == packed), None)


#: A Policy or a subclass of it (apps/httpproxy's HttpPolicy keeps its type).
P = TypeVar("P", bound="Policy")


def own_interface_defaults(server: Any, api: Any, host: str, policy: P) -> P:
    """A proxy listening on ``host`` serves the side of the interface that owns it:
    its listener accepts connections only through that interface (stack/tcp/layer.py
    Listener.own_interface_only), and without --allow-client only that interface's
    subnet may use it (its IPv6 prefixes for an IPv6 ``host``). Hosts on the other
    side (the servers) cannot use the proxy to reach the client network. A 0.0.0.0
    listener keeps every attached subnet (a :: one every IPv6 prefix)."""
    iface = listen_interface(api, host)
    listener = getattr(server, "listener", None)
    six = ":" in host
    if iface is None:
        return policy.with_default_clients(
            ipv6_networks(api) if six else attached_networks(api_interfaces(api)))
    if listener is not None:
        listener.own_interface_only = True
    return policy.with_default_clients(ipv6_networks(api, iface) if six else [iface.network])


def check_mode(mode: str, modes: Iterable[str], splice: Any) -> None:
    """A proxy's --mode: one of ``modes``; splice mode needs the splice API."""
    if mode not in modes:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(modes)}")
    if mode == "splice" and splice is None:
        raise ValueError("splice mode needs the stack's splice API (splice=...)")


@dataclass(frozen=True)
class Policy:
    """The access rules of one proxy.

    ``allow_clients`` None means "the subnets the stack is attached to" (the server
    fills them in); ``allow_dests`` and ``allow_ports`` None mean any; ``users``
    None means no authentication, otherwise RFC 1929 is required.
    """

    allow_clients: tuple[Network, ...] | None = None
    allow_dests: tuple[Network, ...] | None = None
    allow_ports: frozenset[int] | None = None
    users: dict[str, str] | None = None
    hosts: dict[str, str] = field(default_factory=dict)
    max_connections: int = 256
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    #: A relayed session (spliced pair or copy-mode relay) with nothing moving either
    #: way for this long is ended with a RST to both ends (Squid's 15 minutes).
    idle_timeout: float = 900.0
    #: A UDP association (RFC 1928 §7) with no datagram either way for this long is
    #: ended, and its control connection closed (two minutes, as Linux's conntrack
    #: keeps an answered UDP flow).
    udp_idle_timeout: float = 120.0
    #: Connections one client address may hold at once (None: a quarter of
    #: max_connections, at least 1), and how many of them may be in their handshake
    #: (apps/clientslots.py): one client cannot take every slot.
    max_per_client: int | None = None
    max_handshakes_per_client: int = 32
    #: user -> keyed digest of the password (derived from ``users``).
    _digests: dict[str, bytes] = field(init=False, repr=False, compare=False,
                                       default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_per_client is None:
            object.__setattr__(self, "max_per_client", max(1, self.max_connections // 4))
        object.__setattr__(self, "_digests", {
            user: _digest(password.encode()) for user, password in (self.users or {}).items()})
        for name in ("max_connections", "max_per_client", "max_handshakes_per_client"):
            if getattr(self, name) < 1:
                raise PolicyError(f"{name} {getattr(self, name)} must be at least 1")
        for name in ("handshake_timeout", "connect_timeout", "idle_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise PolicyError(f"{name} {value} must be positive")
        for port in self.allow_ports or ():
            parse_port(port)
        for name, addr in self.hosts.items():
            _check_addr(addr, f"host {name!r}")

    @property
    def auth_required(self) -> bool:
        """Whether clients must authenticate with username/password."""
        return self.users is not None

    def with_default_clients(self, networks: Iterable[Network]) -> Self:
        """This policy with ``networks`` as the allowed clients if none were given."""
        if self.allow_clients is not None:
            return self
        return replace(self, allow_clients=tuple(networks))

    def client_allowed(self, addr: str) -> bool:
        """Whether a client at ``addr`` may use the proxy."""
        return _within(addr, self.allow_clients or ())

    def destination_allowed(self, addr: str, port: int) -> bool:
        """Whether the proxy may connect to ``addr``:``port``."""
        if self.allow_ports is not None and port not in self.allow_ports:
            return False
        return self.allow_dests is None or _within(addr, self.allow_dests)

    def authenticate(self, username: bytes, password: bytes) -> bool:
        """Check RFC 1929 credentials in constant time: one digest of the password
        and one comparison of two 32-byte digests, for an unknown user too, so that
        timing tells neither which users exist nor how long a password is."""
        if self.users is None:
            return True
        try:
            stored = self._digests.get(username.decode("utf-8"))
        except UnicodeDecodeError:
            stored = None
        same = hmac.compare_digest(_digest(bytes(password)), stored or _NO_USER)
        return same and stored is not None

    def resolve(self, address: Address) -> str | None:
        """The IP address ``address`` stands for; None for an unknown name."""
        if address.atyp is not Atyp.DOMAINNAME:
            return address.host
        ip = parse_ip(address.host)                          # a literal sent as a name
        return str(ip) if ip is not None else self.hosts.get(_norm_name(address.host))


def _within(addr: str, networks: Iterable[Network]) -> bool:
    ip = parse_ip(addr)
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)
