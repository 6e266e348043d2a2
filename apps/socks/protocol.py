"""SOCKS wire formats, sans-I/O: RFC 1928 (SOCKS5), RFC 1929 (username/password)
and SOCKS4 with the 4a extension for names.

Every ``parse_*`` function takes the bytes received so far and returns either
``None`` ("need more": the message is not complete yet) or ``(message, consumed)``,
where ``consumed`` is how many bytes of the buffer the message used; whatever
follows belongs to the next message. Malformed input raises :class:`SocksError`
and nothing else, so that a server can catch one type and answer with
:attr:`SocksError.reply`. Every variable-length field has a bound, so a peer can
never make a parser wait for more than :data:`MAX_MESSAGE` bytes.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from dataclasses import dataclass

#: What the parsers accept.
BytesLike = bytes | bytearray | memoryview

SOCKS4_VERSION = 4
SOCKS5_VERSION = 5
#: RFC 1929 §2: the sub-negotiation has its own version number.
USERPASS_VERSION = 1

#: SOCKS4 user ids and SOCKS4a names end with a NUL; the protocol sets no limit, we do.
MAX_SOCKS4_FIELD = 255
#: No SOCKS message this module parses is longer (SOCKS4a: 8 + 256 + 256).
MAX_MESSAGE = 8 + 2 * (MAX_SOCKS4_FIELD + 1)


class Method(enum.IntEnum):
    """RFC 1928 §3 authentication methods."""

    NO_AUTH = 0x00
    GSSAPI = 0x01
    USERPASS = 0x02
    NO_ACCEPTABLE = 0xFF


class Command(enum.IntEnum):
    """RFC 1928 §4 request commands (SOCKS4 uses the first two numbers too)."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class Atyp(enum.IntEnum):
    """RFC 1928 §5 address types."""

    IPV4 = 0x01
    DOMAINNAME = 0x03
    IPV6 = 0x04


class Rep(enum.IntEnum):
    """RFC 1928 §6 reply codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Socks4Status(enum.IntEnum):
    """SOCKS4 reply codes (the CD field of the reply)."""

    GRANTED = 0x5A
    REJECTED = 0x5B
    NO_IDENTD = 0x5C
    IDENTD_MISMATCH = 0x5D


class SocksError(ValueError):
    """Malformed, oversized or unsupported SOCKS input.

    ``reason`` is a short snake_case key usable as a counter name; ``reply`` is the
    RFC 1928 §6 code a server should answer with when it still can.
    """

    def __init__(self, reason: str, detail: str = "",
                 reply: int = Rep.GENERAL_FAILURE) -> None:
        super().__init__(reason, detail, reply)
        self.reason = reason
        self.detail = detail
        self.reply = reply

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _check_version(got: int, want: int, what: str) -> None:
    if got != want:
        raise SocksError("bad_version", f"{what}: version {got}, expected {want}")


def _check_name(raw: bytes) -> str:
    """Names travel as bytes; we accept printable ASCII without spaces (RFC 1035 is
    stricter, but proxies see names like "_srv.example" and "host-1")."""
    if not raw:
        raise SocksError("bad_name", "empty domain name")
    if any(b <= 0x20 or b >= 0x7F for b in raw):
        raise SocksError("bad_name", f"domain name {raw[:32]!r} is not printable ASCII")
    return raw.decode("ascii")


# -- addresses ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Address:
    """A SOCKS5 address and port: ``host`` is a dotted IPv4 address, a compressed
    IPv6 address or a domain name, as ``atyp`` says."""

    atyp: Atyp
    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise SocksError("bad_port", f"port {self.port}")
        if self.atyp is Atyp.DOMAINNAME:
            if not self.host.isascii():
                raise SocksError("bad_name", f"domain name {self.host[:32]!r} is not ASCII")
            raw = self.host.encode("ascii")
            _check_name(raw)
            if len(raw) > 255:
                raise SocksError("name_too_long", f"{len(raw)} bytes")
        else:
            ip = parse_ip(self.host)
            version = 0 if ip is None else ip.version
            if version != (4 if self.atyp is Atyp.IPV4 else 6):
                raise SocksError("bad_address", f"{self.host!r} is not {self.atyp.name}")

    @classmethod
    def of(cls, host: str, port: int) -> Address:
        """The address for ``host``: IPv4 or IPv6 if it parses as one, else a name."""
        ip = parse_ip(host)
        if ip is None:
            return cls(Atyp.DOMAINNAME, host, port)
        return cls(Atyp.IPV4 if ip.version == 4 else Atyp.IPV6, str(ip), port)

    def encode(self) -> bytes:
        """ATYP, address and port as in RFC 1928 §4/§6."""
        if self.atyp is Atyp.DOMAINNAME:
            raw = self.host.encode("ascii")
            body = bytes([len(raw)]) + raw
        else:
            ip = parse_ip(self.host)
            if ip is None or ip.version != (4 if self.atyp is Atyp.IPV4 else 6):
                raise SocksError("bad_address", f"{self.host!r} is not {self.atyp.name}")
            body = ip.packed
        return bytes([self.atyp]) + body + struct.pack("!H", self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.atyp is Atyp.IPV6 else self.host
        return f"{host}:{self.port}"


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address, None if it is not one (parsed once per address: the
    same few addresses come back on every connection)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_address(buf: BytesLike, off: int = 0) -> tuple[Address, int] | None:
    """An address starting at ``buf[off]``; returns (address, offset after it)."""
    if len(buf) < off + 1:
        return None
    atyp = buf[off]
    if atyp == Atyp.IPV4:
        end = off + 1 + 4
        if len(buf) < end + 2:
            return None
        host = str(ipaddress.IPv4Address(bytes(buf[off + 1:end])))
    elif atyp == Atyp.IPV6:
        end = off + 1 + 16
        if len(buf) < end + 2:
            return None
        host = str(ipaddress.IPv6Address(bytes(buf[off + 1:end])))
    elif atyp == Atyp.DOMAINNAME:
        if len(buf) < off + 2:
            return None
        end = off + 2 + buf[off + 1]
        if len(buf) < end + 2:
            return None
        host = _check_name(bytes(buf[off + 2:end]))
    else:
        raise SocksError("bad_atyp", f"address type {atyp}",
                         reply=Rep.ADDRESS_TYPE_NOT_SUPPORTED)
    (port,) = struct.unpack_from("!H", buf, end)
    return Address(Atyp(atyp), host, port), end + 2


# -- greeting and method selection (RFC 1928 §3) ----------------------------------------
@dataclass(frozen=True, slots=True)
class Greeting:
    """The client's version identifier/method selection message."""

    methods: tuple[int, ...]

    def encode(self) -> bytes:
        """VER NMETHODS METHODS."""
        if not 1 <= len(self.methods) <= 255:
            raise SocksError("bad_nmethods", f"{len(self.methods)} methods")
        return bytes([SOCKS5_VERSION, len(self.methods), *self.methods])


def parse_greeting(buf: BytesLike) -> tuple[Greeting, int] | None:
    """The client's greeting; NMETHODS 0 is an error (RFC 1928 §3 says 1 to 255)."""
    if len(buf) < 2:
        return None
    _check_version(buf[0], SOCKS5_VERSION, "greeting")
    n = buf[1]
    if n == 0:
        raise SocksError("bad_nmethods", "no methods offered")
    if len(buf) < 2 + n:
        return None
    return Greeting(tuple(buf[2:2 + n])), 2 + n


@dataclass(frozen=True, slots=True)
class MethodSelection:
    """The server's choice of method (0xFF: none acceptable)."""

    method: int

    def encode(self) -> bytes:
        """VER METHOD."""
        return bytes([SOCKS5_VERSION, self.method])


def parse_method_selection(buf: BytesLike) -> tuple[MethodSelection, int] | None:
    """The server's method selection (for clients and tests)."""
    if len(buf) < 2:
        return None
    _check_version(buf[0], SOCKS5_VERSION, "method selection")
    return MethodSelection(buf[1]), 2


# -- username/password (RFC 1929) --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserPassRequest:
    """RFC 1929 §2: UNAME and PASSWD, each 1 to 255 bytes."""

    username: bytes
    password: bytes

    def encode(self) -> bytes:
        """VER ULEN UNAME PLEN PASSWD."""
        for what, field in (("username", self.username), ("password", self.password)):
            if not 1 <= len(field) <= 255:
                raise SocksError("bad_credentials", f"{what} of {len(field)} bytes")
        return (bytes([USERPASS_VERSION, len(self.username)]) + self.username
                + bytes([len(self.password)]) + self.password)


def parse_userpass_request(buf: BytesLike) -> tuple[UserPassRequest, int] | None:
    """The client's username/password request."""
    if len(buf) < 2:
        return None
    _check_version(buf[0], USERPASS_VERSION, "username/password request")
    ulen = buf[1]
    if ulen == 0:
        raise SocksError("bad_credentials", "empty username")
    if len(buf) < 3 + ulen:
        return None
    plen = buf[2 + ulen]
    if plen == 0:
        raise SocksError("bad_credentials", "empty password")
    end = 3 + ulen + plen
    if len(buf) < end:
        return None
    return UserPassRequest(bytes(buf[2:2 + ulen]), bytes(buf[3 + ulen:end])), end


@dataclass(frozen=True, slots=True)
class UserPassResponse:
    """RFC 1929 §2: STATUS 0 is success, anything else failure."""

    status: int

    @property
    def ok(self) -> bool:
        """Whether the credentials were accepted."""
        return self.status == 0

    def encode(self) -> bytes:
        """VER STATUS."""
        return bytes([USERPASS_VERSION, self.status])


def parse_userpass_response(buf: BytesLike) -> tuple[UserPassResponse, int] | None:
    """The server's username/password response (for clients and tests)."""
    if len(buf) < 2:
        return None
    _check_version(buf[0], USERPASS_VERSION, "username/password response")
    return UserPassResponse(buf[1]), 2


# -- requests and replies (RFC 1928 §4, §6) --------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """VER CMD RSV DST.ADDR DST.PORT; ``command`` is kept as a number so that a server
    can answer an unknown one with COMMAND_NOT_SUPPORTED."""

    command: int
    address: Address

    def encode(self) -> bytes:
        """The request bytes (RSV written as 0)."""
        return bytes([SOCKS5_VERSION, self.command, 0]) + self.address.encode()


def parse_request(buf: BytesLike) -> tuple[Request, int] | None:
    """The client's request. RSV is not checked: RFC 1928 only names it reserved."""
    if len(buf) < 4:
        return None
    _check_version(buf[0], SOCKS5_VERSION, "request")
    got = parse_address(buf, 3)
    if got is None:
        return None
    address, end = got
    return Request(buf[1], address), end



# -- UDP ASSOCIATE datagrams (RFC 1928 §7) ------------------------------------------------
@dataclass(frozen=True, slots=True)
class UdpHeader:
    """RSV FRAG ATYP DST.ADDR DST.PORT: what precedes the data of every datagram
    between a client and its UDP relay (the destination toward the relay, the
    source on the way back)."""

    address: Address
    frag: int = 0

    def encode(self) -> bytes:
        """The header bytes (RSV written as 0)."""
        return bytes([0, 0, self.frag]) + self.address.encode()


def parse_udp_header(buf: BytesLike) -> tuple[UdpHeader, int]:
    """The header of one datagram and the offset of its data. A datagram is whole
    or nothing, so a short one is an error here (not "read more"): SocksError
    "udp_short"; RSV must be 0 ("udp_rsv"), an unknown ATYP is "bad_atyp"."""
    if len(buf) < 4:
        raise SocksError("udp_short", f"{len(buf)} bytes")
    if buf[0] or buf[1]:
        raise SocksError("udp_rsv", f"RSV {buf[0]:#04x}{buf[1]:02x}")
    got = parse_address(buf, 3)
    if got is None:
        raise SocksError("udp_short", f"{len(buf)} bytes: the address is cut off")
    address, end = got
    return UdpHeader(address, buf[2]), end


@dataclass(frozen=True, slots=True)
class Reply:
    """VER REP RSV BND.ADDR BND.PORT."""

    rep: int
    bound: Address = Address(Atyp.IPV4, "0.0.0.0", 0)

    def encode(self) -> bytes:
        """The reply bytes."""
        return bytes([SOCKS5_VERSION, self.rep, 0]) + self.bound.encode()


def parse_reply(buf: BytesLike) -> tuple[Reply, int] | None:
    """The server's reply (for clients and tests)."""
    if len(buf) < 4:
        return None
    _check_version(buf[0], SOCKS5_VERSION, "reply")
    got = parse_address(buf, 3)
    if got is None:
        return None
    bound, end = got
    return Reply(buf[1], bound), end


# -- SOCKS4 and SOCKS4a -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Socks4Request:
    """VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL]. With ``hostname`` set it is a
    SOCKS4a request: DSTIP is 0.0.0.x with x != 0 and the name follows the user id."""

    command: int
    port: int
    ip: str
    userid: bytes = b""
    hostname: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise SocksError("bad_port", f"port {self.port}")
        if len(self.userid) > MAX_SOCKS4_FIELD or 0 in self.userid:
            raise SocksError("bad_userid", f"{len(self.userid)} bytes")
        try:
            packed = ipaddress.IPv4Address(self.ip).packed
        except ValueError:
            raise SocksError("bad_address", f"{self.ip!r} is not IPv4") from None
        marker = packed[:3] == b"\0\0\0" and packed[3] != 0
        if (self.hostname is not None) != marker:
            # SOCKS4a: the address 0.0.0.x (x != 0) is what says that a name follows.
            raise SocksError("bad_address", "SOCKS4a needs both 0.0.0.x and a name")
        if self.hostname is not None:
            if not self.hostname.isascii():
                raise SocksError("bad_name", f"{self.hostname[:32]!r} is not ASCII")
            raw = self.hostname.encode("ascii")
            _check_name(raw)
            if len(raw) > MAX_SOCKS4_FIELD:
                raise SocksError("name_too_long", f"{len(raw)} bytes")

    @property
    def address(self) -> Address:
        """The destination as a SOCKS5 address (a name for SOCKS4a)."""
        if self.hostname is not None:
            return Address(Atyp.DOMAINNAME, self.hostname, self.port)
        return Address(Atyp.IPV4, self.ip, self.port)

    def encode(self) -> bytes:
        """The request bytes."""
        out = (struct.pack("!BBH", SOCKS4_VERSION, self.command, self.port)
               + ipaddress.IPv4Address(self.ip).packed + self.userid + b"\0")
        if self.hostname is not None:
            out += self.hostname.encode("ascii") + b"\0"
        return out


def _nul_field(buf: BytesLike, off: int, what: str) -> tuple[bytes, int] | None:
    """A NUL-terminated field at ``off``: (field, offset after the NUL), bounded."""
    window = bytes(buf[off:off + MAX_SOCKS4_FIELD + 1])
    i = window.find(b"\0")
    if i < 0:
        if len(window) > MAX_SOCKS4_FIELD:
            raise SocksError(f"{what}_too_long", f"no NUL in {MAX_SOCKS4_FIELD} bytes")
        return None
    return window[:i], off + i + 1


def parse_socks4_request(buf: BytesLike) -> tuple[Socks4Request, int] | None:
    """A SOCKS4 or SOCKS4a request."""
    if len(buf) < 8:
        if buf and buf[0] != SOCKS4_VERSION:
            _check_version(buf[0], SOCKS4_VERSION, "socks4 request")
        return None
    _check_version(buf[0], SOCKS4_VERSION, "socks4 request")
    command, port = buf[1], struct.unpack_from("!H", buf, 2)[0]
    ip = bytes(buf[4:8])
    got = _nul_field(buf, 8, "userid")
    if got is None:
        return None
    userid, end = got
    hostname = None
    # SOCKS4a: an address 0.0.0.x with x != 0 says that a name follows.
    if ip[:3] == b"\0\0\0" and ip[3] != 0:
        got = _nul_field(buf, end, "name")
        if got is None:
            return None
        raw, end = got
        hostname = _check_name(raw)
    return Socks4Request(command, port, str(ipaddress.IPv4Address(ip)), userid, hostname), end


@dataclass(frozen=True, slots=True)
class Socks4Reply:
    """VN(0) CD DSTPORT DSTIP."""

    status: int
    port: int = 0
    ip: str = "0.0.0.0"

    def encode(self) -> bytes:
        """The reply bytes."""
        return struct.pack("!BBH", 0, self.status, self.port) + ipaddress.IPv4Address(
            self.ip).packed


def parse_socks4_reply(buf: BytesLike) -> tuple[Socks4Reply, int] | None:
    """The server's SOCKS4 reply (for clients and tests); VN must be 0."""
    if len(buf) < 8:
        return None
    _check_version(buf[0], 0, "socks4 reply")
    status, port = buf[1], struct.unpack_from("!H", buf, 2)[0]
    return Socks4Reply(status, port, str(ipaddress.IPv4Address(bytes(buf[4:8])))), 8


def detect_version(buf: BytesLike) -> int | None:
    """4 or 5 from the first byte a client sends; None before it arrives."""
    if not buf:
        return None
    if buf[0] not in (SOCKS4_VERSION, SOCKS5_VERSION):
        raise SocksError("bad_version", f"first byte {buf[0]}: not SOCKS4 or SOCKS5")
    return buf[0]
