"""The asyncio face of the stack's UDP: ``create_datagram_endpoint`` and a transport
with the methods and semantics of asyncio's DatagramTransport.

Code written for ``loop.create_datagram_endpoint`` ports by calling the stack's
instead (``net.create_datagram_endpoint``): the same arguments (addresses are IPv4
literals; the stack resolves no names here, ``net.resolve`` does), the same protocol
callbacks — ``connection_made``, ``datagram_received(data, (ip, port))``,
``error_received(exc)`` (a ConnectionRefusedError when a connected endpoint's peer
answers port unreachable; an OSError when a send fails) and ``connection_lost(None)``
after ``close()``. Callbacks run from the stack's receive path, as asyncio runs them
from its reader callback; an exception in one is reported to the loop's exception
handler and never reaches the stack.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from stack.netfamily import parse_address
from stack.udp import ANY, ANY6, LIMITED_BROADCAST, UdpError, UdpLayer, UdpSocket

log = logging.getLogger("tapsplice.udp")


class Driver(Protocol):
    """What the API needs of the driver: its clock and a way to send what the core queued."""

    def now(self) -> float: ...
    def poke(self) -> None: ...


def _host(host: str | None, what: str) -> bytes:
    """An IPv4 or IPv6 literal (None, "" and "0.0.0.0": any IPv4 address; "::" any
    IPv6 one) as 4 or 16 bytes."""
    if host in (None, "", "0.0.0.0"):
        return ANY
    if host == "<broadcast>":
        return LIMITED_BROADCAST
    try:
        return parse_address(str(host))
    except (OSError, ValueError):
        raise OSError(errno.EINVAL, f"{what} {host!r}: the stack takes IP addresses "
                                    "(names: await net.resolve(name))") from None


def _address(addr: Any, what: str) -> tuple[bytes, int]:
    try:
        if len(addr) == 4:      # IPv6 (host, port, flowinfo, scope_id), as asyncio's
            addr = addr[:2]
        host, port = addr
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (host, port), not {addr!r}") from None
    return _host(host, what), port


class UdpTransport(asyncio.DatagramTransport):
    """A datagram endpoint on the stack (see the module docstring)."""

    def __init__(self, sock: UdpSocket, protocol: asyncio.DatagramProtocol,
                 driver: Driver, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._sock = sock
        self._protocol = protocol
        self._driver = driver
        self._loop = loop
        self._closing = False
        self._send_after_close = 0
        sock.on_readable = self._on_readable
        sock.on_error = self._on_error

    # -- asyncio.BaseTransport --------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``sockname`` and ``peername`` like asyncio's; ``udp_socket`` the stack's
        socket (its counters and queue)."""
        if name == "sockname":
            return self._sock.sockname
        if name == "peername":
            return self._sock.peername if self._sock.remote is not None else default
        if name == "udp_socket":
            return self._sock
        return default

    def is_closing(self) -> bool:
        """True once close() or abort() was called."""
        return self._closing

    def close(self) -> None:
        """Release the port; ``connection_lost(None)`` follows on the next loop turn."""
        if self._closing:
            return
        self._closing = True
        self._sock.layer.close(self._sock)
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        """The same as close(): nothing is ever buffered."""
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Deliver to another protocol from now on."""
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol datagrams go to."""
        return self._protocol

    def get_write_buffer_size(self) -> int:
        """Always 0: a datagram is handed to the stack (and the device) at once."""
        return 0

    # -- sending ----------------------------------------------------------------------
    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """Send one datagram to ``addr`` (connected endpoints: None or their peer).

        As asyncio: a wrong type raises TypeError, another address than a connected
        endpoint's peer ValueError; a send after close() is ignored (and logged after
        a few); a failed send is reported to ``error_received``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not "
                            f"{type(data).__name__!r}")
        peer = self._sock.peername
        if peer is not None and addr not in (None, peer):
            raise ValueError(f"Invalid address: must be None or {peer}")
        if self._closing:
            self._send_after_close += 1
            if self._send_after_close >= 5:
                log.warning("sendto() on a closed UDP endpoint")
            return
        try:
            target = None if addr is None else _address(addr, "address")
            self._sock.layer.sendto(self._sock, data, target, self._driver.now())
        except (UdpError, OSError, ValueError) as exc:
            err = exc if isinstance(exc, OSError) else OSError(errno.EINVAL, str(exc))
            self._call(self._protocol.error_received, err)
            return
        self._driver.poke()

    # -- from the stack ----------------------------------------------------------------
    def _on_readable(self, sock: UdpSocket) -> None:
        while not self._closing:
            item = sock.pop()
            if item is None:
                break
            self._call(self._protocol.datagram_received, *item)

    def _on_error(self, _sock: UdpSocket, err: int) -> None:
        self._call(self._protocol.error_received, OSError(err, os.strerror(err)))

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the stack's receive path must go on
            self._loop.call_exception_handler({
                "message": f"exception in {fn.__qualname__}", "exception": exc,
                "transport": self, "protocol": self._protocol})


class UdpApi:
    """``create_datagram_endpoint`` over a :class:`~stack.udp.UdpLayer`."""

    def __init__(self, layer: UdpLayer, driver: Driver) -> None:
        self.layer = layer
        self.driver = driver

    async def create_datagram_endpoint(
            self, protocol_factory: Callable[[], asyncio.DatagramProtocol],
            local_addr: tuple[str, int] | None = None,
            remote_addr: tuple[str, int] | None = None, *,
            allow_broadcast: bool | None = None, device: str | None = None,
            **ignored: Any) -> tuple[UdpTransport, asyncio.DatagramProtocol]:
        """Like ``loop.create_datagram_endpoint``: a new endpoint bound to
        ``local_addr`` (None or port 0: a random ephemeral port) and, with
        ``remote_addr``, connected to it. ``device`` (the stack's own addition, like
        SO_BINDTODEVICE) ties it to one interface by name. Options of asyncio's
        that mean nothing here (family, proto, flags, reuse_port) are accepted and
        ignored; ``sock`` is refused."""
        if ignored.get("sock") is not None:
            raise ValueError("the stack has no kernel sockets to adopt")
        remote = _address(remote_addr, "remote_addr") if remote_addr else None
        wildcard = ANY6 if remote is not None and len(remote[0]) == 16 else ANY
        addr, port = _address(local_addr, "local_addr") if local_addr else (wildcard, 0)
        index = None
        if device is not None:
            names = {i.name: i.index for i in getattr(self.layer.ip, "interfaces", [])}
            if device not in names:
                raise OSError(errno.ENODEV, f"no interface {device!r}")
            index = names[device]
        sock = self.layer.bind(addr, port, remote=remote, broadcast=bool(allow_broadcast),
                               iface=index)
        loop = asyncio.get_running_loop()
        protocol = protocol_factory()
        transport = UdpTransport(sock, protocol, self.driver, loop)
        protocol.connection_made(transport)
        return transport, protocol


__all__ = ["UdpApi", "UdpTransport"]
