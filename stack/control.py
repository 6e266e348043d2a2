"""A control socket for a running stack: what `tapsplice stat` reads.

The server listens on a Unix stream socket, served by the stack's own event loop, and
speaks a line protocol: the client sends one JSON object on one line and gets one JSON
object on one line back, then the server closes the connection.

Requests::

    {"cmd": "snapshot", "state": "ESTABLISHED", "addr": "198.18.0.1", "port": 7,
     "limit": 100}                       # every field but "cmd" is optional
    {"cmd": "metrics"}                   # {"metrics": "<Prometheus text exposition>"}
    {"cmd": "ping"}                      # {"pong": <pid>}

Anything else gets ``{"error": "..."}``. The snapshot is built synchronously on the
loop that also moves the frames, so it is capped (``limit``, at most
``max_connections``) and says ``"truncated": true`` when connections were left out.

The socket is created with mode 0600 and, at the default path
``/run/tapsplice/<pid>.sock``, in a directory of mode 0700: the snapshot names every
peer of the stack, which only root should see. It is removed when the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from stack.netfamily import address_str

log = logging.getLogger("tapsplice.control")

#: Where stacks put their control sockets unless told otherwise.
CONTROL_DIR = Path("/run/tapsplice")
#: Largest request line accepted (bytes, newline included).
MAX_REQUEST = 4096
#: Most connections in one snapshot unless the server is configured otherwise.
MAX_CONNECTIONS = 10_000
#: Most splice pairs and neighbour entries listed in one snapshot.
MAX_PAIRS = 10_000
MAX_NEIGHBOURS = 1024
#: Control clients served at once; more are answered with an error and closed.
MAX_CLIENTS = 8
#: Seconds a client may take to send its request or to read the answer.
CLIENT_TIMEOUT = 5.0

COMMANDS = ("snapshot", "metrics", "ping")


class ControlError(Exception):
    """The control socket cannot be used: no stack, a stale socket, a bad answer..."""


class StackView(Protocol):
    """What the control server reads: a TapStack or anything with the same parts."""

    stack: Any        # stack.core.Stack
    tcp: Any          # stack.tcp.layer.TcpLayer
    splicer: Any      # splice.splicer.Splicer or None
    devices: list     # [(Interface, device with .counters)]
    # Optional (read with getattr): ``udp`` (stack.udp.UdpLayer) and ``resolver``
    # (stack.dns.Resolver or None), shown when the stack has them.


def default_path(pid: int | None = None) -> Path:
    """The default control socket of process ``pid`` (this process by default)."""
    return CONTROL_DIR / f"{os.getpid() if pid is None else pid}.sock"


# -- the snapshot ---------------------------------------------------------------------

#: Addresses of either family as text (IPv6 listeners and connections too).
_ip = address_str


def _num(value: Any) -> Any:
    # JSON has no infinities or NaN; a not-yet-measured value becomes null.
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _endpoints(tcb: Any) -> dict[str, Any]:
    return {"local": _ip(tcb.local), "local_port": tcb.local_port,
            "remote": _ip(tcb.remote), "remote_port": tcb.remote_port}


def connection_row(tcb: Any, splicer: Any = None) -> dict[str, Any]:
    """One connection as the snapshot lists it: 4-tuple, TCP state, RFC 9293 send and
    receive windows, RFC 6298 timers, congestion state, byte counts and its splice."""
    info = tcb.info()
    row = _endpoints(tcb)
    row.update({
        "state": tcb.state.name,
        "rtt": _num(info["rtt"]), "rttvar": _num(info["rttvar"]), "rto": _num(info["rto"]),
        "cwnd": info["cwnd"], "ssthresh": info["ssthresh"],
        "snd_wnd": info["snd_wnd"], "rcv_wnd": info["rcv_wnd"],
        "mss": info["mss"], "unacked": info["unacked"],
        "bytes_out": info["bytes_acked"], "bytes_in": info["bytes_received"],
        "segs_out": info["segs_out"], "segs_in": info["segs_in"],
        "retransmits": info["retransmits"], "total_retrans": info["total_retrans"],
        "options": info["options"],
        "splice": None,
    })
    side = splicer.sides.get(id(tcb)) if splicer is not None else None
    if side is not None:
        partner = side.other
        row["splice"] = {"role": side.role, "state": side.state.value,
                         "pending": len(side.pending or ()),
                         "partner": _endpoints(partner.tcb) if partner is not None else None}
    ow = splicer.oneway.by_tcb.get(id(tcb)) if splicer is not None else None
    if ow is not None:
        # A one-way splice (docs/splice.md §7): this connection is its source or its sink.
        role = "source" if ow.source is tcb else "sink"
        partner_tcb = ow.sink if ow.source is tcb else ow.source
        row["splice"] = {"role": f"one-way {role}", "state": ow.phase.value,
                         "pending": len(ow.waiting), "partner": _endpoints(partner_tcb),
                         "relayed_bytes": ow.counters["relayed_bytes"],
                         "copied_bytes": ow.counters["copied_bytes"]}
    return row


def _matches(tcb: Any, state: str | None, addr: bytes | None, port: int | None) -> bool:
    if state is not None and tcb.state.name != state:
        return False
    if addr is not None and addr not in (tcb.local, tcb.remote):
        return False
    return port is None or port in (tcb.local_port, tcb.remote_port)


def _listeners(tcp: Any) -> list[dict[str, Any]]:
    out = []
    for lst in list(tcp.listeners.values())[:MAX_CONNECTIONS]:
        out.append({"local": _ip(lst.addr), "local_port": lst.port, "state": "LISTEN",
                    "backlog": lst.backlog, "accept_queue": len(lst.accept_queue),
                    "syn_queue": lst.syn_queue_len})
    return out


def _splice_part(splicer: Any) -> dict[str, Any]:
    if splicer is None:
        return {"enabled": False, "counters": {}, "pairs": [], "pairs_total": 0}
    pairs = []
    for pair in list(splicer.pairs.values())[:MAX_PAIRS]:
        one = {}
        for side in pair.sides():
            one[side.role] = dict(_endpoints(side.tcb), state=side.state.value,
                                  pending=len(side.pending or ()))
        one["counters"] = dict(pair.counters)
        pairs.append(one)
    ways = list({id(w): w for w in splicer.oneway.by_tcb.values()}.values())
    return {"enabled": True, "counters": dict(sorted(splicer.counters.items())),
            "pairs": pairs, "pairs_total": len(splicer.pairs),
            "one_way": [dict(w.info(), source=_endpoints(w.source), sink=_endpoints(w.sink))
                        for w in ways[:MAX_PAIRS]],
            "one_way_total": len(ways)}


def counters_part(net: StackView) -> dict[str, Any]:
    """Stack, TCP, device and splice counters; drops by reason; the neighbour cache."""
    core = net.stack
    counters = dict(sorted(core.counters.items()))
    drops = {k.partition(".")[2]: v for k, v in counters.items() if k.startswith("drop.")}
    tcp = dict(sorted(net.tcp.counters.items()))
    neigh = []
    for n in list(core.neigh.entries.values())[:MAX_NEIGHBOURS]:
        neigh.append({"ip": _ip(n.ip), "iface": n.iface.name, "state": n.state.name,
                      "mac": n.mac.hex(":") if n.mac else None, "pending": len(n.pending)})
    splicer = net.splicer
    return {
        "stack": counters,
        "drops": drops,
        "arp": {k: v for k, v in counters.items() if "arp" in k},
        "tcp": tcp,
        "devices": {iface.name: dict(dev.counters) for iface, dev in net.devices},
        "neighbours": neigh,
        "neighbours_total": len(core.neigh),
        # Bytes of spliced payload the stack copied (docs/splice.md promises none).
        "copied_payload_bytes": splicer.counters["copied_payload_bytes"] if splicer else 0,
        **_udp_and_dns(net),
    }


def _udp_and_dns(net: StackView) -> dict[str, Any]:
    """UDP counters and socket count; the resolver's counters and cache size."""
    out: dict[str, Any] = {}
    udp = getattr(net, "udp", None)
    if udp is not None:
        out["udp"] = dict(sorted(udp.counters.items()))
        out["udp_sockets"] = udp.count
    resolver = getattr(net, "resolver", None)
    if resolver is not None:
        stats = resolver.stats()
        out["dns"] = dict(sorted(stats["counters"].items()))
        out["dns_cache_entries"] = stats["cache_entries"]
    return out


def build_snapshot(net: StackView, *, limit: int = MAX_CONNECTIONS, state: str | None = None,
                   addr: str | None = None, port: int | None = None) -> dict[str, Any]:
    """Everything `tapsplice stat` shows, with connections filtered and capped at ``limit``."""
    want_addr = socket.inet_aton(addr) if addr is not None else None
    splicer = net.splicer
    rows: list[dict[str, Any]] = []
    matched = 0
    for tcb in list(net.tcp.connections.values()):
        if not _matches(tcb, state, want_addr, port):
            continue
        matched += 1
        if len(rows) < limit:
            rows.append(connection_row(tcb, splicer))
    listeners = [lst for lst in _listeners(net.tcp)
                 if (state in (None, "LISTEN"))
                 and (addr is None or lst["local"] in (addr, "0.0.0.0"))
                 and (port is None or lst["local_port"] == port)]
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "connections": rows,
        "connections_total": len(net.tcp.connections),
        "connections_matched": matched,
        "truncated": matched > len(rows),
        "listeners": listeners,
        "splice": _splice_part(splicer),
        "counters": counters_part(net),
    }


# -- Prometheus text exposition ------------------------------------------------------

def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, help_: str, kind: str,
            samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
    return lines


def metrics_text(net: StackView) -> str:
    """The counters in the Prometheus text exposition format (version 0.0.4)."""
    c = counters_part(net)
    by_state: dict[str, int] = {}
    for tcb in list(net.tcp.connections.values()):
        by_state[tcb.state.name] = by_state.get(tcb.state.name, 0) + 1
    splicer = net.splicer
    lines: list[str] = []
    lines += _family("tapsplice_stack_events_total", "Events counted by the IP layer.",
                     "counter", (({"event": k}, v) for k, v in c["stack"].items()
                                 if not k.startswith("drop.")))
    lines += _family("tapsplice_drops_total", "Frames dropped, by reason.", "counter",
                     (({"reason": k}, v) for k, v in c["drops"].items()))
    lines += _family("tapsplice_tcp_events_total", "Events counted by TCP.", "counter",
                     (({"event": k}, v) for k, v in c["tcp"].items()))
    lines += _family("tapsplice_device_events_total", "Device counters.", "counter",
                     (({"device": d, "event": k}, v) for d, cs in c["devices"].items()
                      for k, v in cs.items()))
    lines += _family("tapsplice_connections", "TCP connections by state.", "gauge",
                     (({"state": s}, n) for s, n in sorted(by_state.items())))
    lines += _family("tapsplice_neighbours", "Neighbour cache entries.", "gauge",
                     [({}, c["neighbours_total"])])
    lines += _family("tapsplice_splice_pairs", "Splice pairs.", "gauge",
                     [({}, len(splicer.pairs) if splicer else 0)])
    lines += _family("tapsplice_splice_events_total", "Splice counters.", "counter",
                     (({"event": k}, v) for k, v in
                      (sorted(splicer.counters.items()) if splicer else [])))
    lines += _family("tapsplice_udp_events_total", "Events counted by UDP.", "counter",
                     (({"event": k}, v) for k, v in c.get("udp", {}).items()))
    if "udp_sockets" in c:
        lines += _family("tapsplice_udp_sockets", "Open UDP sockets.", "gauge",
                         [({}, c["udp_sockets"])])
    lines += _family("tapsplice_dns_events_total", "Events counted by the resolver.",
                     "counter", (({"event": k}, v) for k, v in c.get("dns", {}).items()))
    if "dns_cache_entries" in c:
        lines += _family("tapsplice_dns_cache_entries", "Names in the resolver's cache.",
                         "gauge", [({}, c["dns_cache_entries"])])
    lines += _family("tapsplice_copied_payload_bytes_total",
                     "Spliced payload bytes the stack copied.", "counter",
                     [({}, c["copied_payload_bytes"])])
    return "\n".join(lines) + "\n"


# -- requests ---------------------------------------------------------------------------

class RequestError(ValueError):
    """A request the server refuses; its text goes back as {"error": ...}."""


def parse_request(line: bytes) -> dict[str, Any]:
    """Decode and check one request line."""
    try:
        req = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(f"not JSON: {e}") from None
    except RecursionError:  # "[[[[..." within MAX_REQUEST nests deeper than Python recurses
        raise RequestError("not JSON: nested too deeply") from None
    if not isinstance(req, dict):
        raise RequestError("a request is a JSON object")
    cmd = req.get("cmd")
    if cmd not in COMMANDS:
        raise RequestError(f"unknown cmd {cmd!r}; expected one of {', '.join(COMMANDS)}")
    allowed = {"cmd", "state", "addr", "port", "limit"} if cmd == "snapshot" else {"cmd"}
    extra = sorted(set(req) - allowed)
    if extra:
        raise RequestError(f"unknown fields for {cmd}: {', '.join(extra)}")
    state = req.get("state")
    if state is not None and not isinstance(state, str):
        raise RequestError("state: a string such as ESTABLISHED")
    addr = req.get("addr")
    if addr is not None:
        if not isinstance(addr, str):
            raise RequestError("addr: a dotted IPv4 address")
        try:
            socket.inet_pton(socket.AF_INET, addr)
        except OSError:
            raise RequestError(f"addr: {addr!r} is not an IPv4 address") from None
    for key, top in (("port", 65535), ("limit", 1 << 31)):
        v = req.get(key)
        if v is not None and (type(v) is not int or not 0 <= v <= top):
            raise RequestError(f"{key}: an integer from 0 to {top}")
    return req


def answer(net: StackView, req: dict[str, Any], max_connections: int = MAX_CONNECTIONS) -> dict:
    """The answer to a checked request."""
    cmd = req["cmd"]
    if cmd == "ping":
        return {"pong": os.getpid()}
    if cmd == "metrics":
        return {"metrics": metrics_text(net)}
    state = req.get("state")
    if state is not None:
        state = state.upper().replace("-", "_")
    limit = min(req.get("limit", max_connections), max_connections)
    return build_snapshot(net, limit=limit, state=state, addr=req.get("addr"),
                          port=req.get("port"))


def encode(obj: dict[str, Any]) -> bytes:
    """One protocol line."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


# -- the server -------------------------------------------------------------------------

def _clear_stale(path: Path) -> None:
    """Remove a socket left by a stack that died; refuse to steal a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise ControlError(f"{path} is in use by another stack")


def bind_control_socket(path: Path, *, make_dir: bool = False) -> socket.socket:
    """A listening, non-blocking Unix socket at ``path`` with mode 0600."""
    if make_dir:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes bind() create the file 0600 at once: no moment in which
    # another user could connect (chmod afterwards alone would leave one).
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(MAX_CLIENTS)
    sock.setblocking(False)
    return sock


class ControlServer:
    """Answers control requests about ``net`` on a Unix socket (see the module docstring).

    ``path`` None means the default path (whose directory is created); failing to
    create a socket there is logged, not raised, so a stack run without root still runs.
    """

    def __init__(self, net: StackView, path: str | os.PathLike[str] | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_clients: int = MAX_CLIENTS,
                 timeout: float = CLIENT_TIMEOUT) -> None:
        self.net = net
        self.default = path is None
        self.path = default_path() if path is None else Path(path)
        self.max_connections = max_connections
        self.max_clients = max_clients
        self.timeout = timeout
        self.counters: dict[str, int] = dict.fromkeys(
            ("requests", "errors", "busy", "timeouts", "disconnects"), 0)
        self._sock: socket.socket | None = None
        self._ino: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._active = 0

    def open(self) -> bool:
        """Create the socket now (synchronously); False if the default path failed."""
        try:
            self._sock = bind_control_socket(self.path, make_dir=self.default)
        except (OSError, ControlError) as e:
            if not self.default:
                raise
            log.warning("no control socket at %s: %s", self.path, e)
            return False
        self._ino = os.stat(self.path).st_ino
        log.info("control socket %s", self.path)
        return True

    async def serve(self) -> None:
        """Start answering on the socket made by :meth:`open`."""
        if self._sock is None and not self.open():
            return
        self._server = await asyncio.start_unix_server(
            self._handle, sock=self._sock, limit=MAX_REQUEST)

    def start(self) -> None:
        """Open the socket and start serving from the running loop (for sync callers)."""
        if self.open():
            self._task = asyncio.get_running_loop().create_task(self.serve())

    async def __aenter__(self) -> ControlServer:
        await self.serve()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, drop clients and remove the socket file (if it is still ours)."""
        # After the loop has stopped, closing its objects may raise: the file is
        # removed below in any case.
        with contextlib.suppress(RuntimeError):
            if self._task is not None and not self._task.done():
                self._task.cancel()
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
        if self._server is None and self._sock is not None:
            self._sock.close()
        self._task = None
        self._server = None
        self._sock = None
        self._writers.clear()
        if self._ino is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._ino:
                    os.unlink(self.path)
            self._ino = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= self.max_clients:
            self.counters["busy"] += 1
            writer.write(encode({"error": "busy: too many control clients"}))
            writer.close()
            return
        self._active += 1
        self._writers.add(writer)
        try:
            reply = await self._reply(reader)
            writer.write(encode(reply))
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (ConnectionError, TimeoutError):
            self.counters["disconnects"] += 1
        finally:
            self._active -= 1
            self._writers.discard(writer)
            writer.close()

    async def _reply(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), self.timeout)
        except TimeoutError:
            self.counters["timeouts"] += 1
            return {"error": f"no request line within {self.timeout:g} s"}
        except ValueError:  # the StreamReader's limit: the line is too long
            self.counters["errors"] += 1
            return {"error": f"request longer than {MAX_REQUEST} bytes"}
        self.counters["requests"] += 1
        try:
            req = parse_request(line)
        except RequestError as e:
            self.counters["errors"] += 1
            return {"error": str(e)}
        return answer(self.net, req, self.max_connections)


# -- the client -------------------------------------------------------------------------

def find_sockets(directory: Path | None = None) -> list[Path]:
    """The control sockets of the running stacks in ``directory`` (/run/tapsplice):
    one per process, so one per worker of a stack run with --workers."""
    directory = CONTROL_DIR if directory is None else directory
    try:
        names = sorted(directory.glob("*.sock"))
    except OSError as e:
        raise ControlError(f"cannot read {directory}: {e}") from None
    alive = [p for p in names if _pid_alive(p.stem)]
    if not alive:
        raise ControlError(f"no running stack: no control socket in {directory} "
                           "(start one, e.g. `tapsplice serve --lab`, or give --control PATH)")
    return alive


def find_socket(directory: Path | None = None) -> Path:
    """The control socket of the one running stack in ``directory`` (/run/tapsplice)."""
    alive = find_sockets(directory)
    if len(alive) > 1:
        raise ControlError("several stacks are running (workers of one stack, or several "
                           "stacks): choose one with --control, or give --all: "
                           + ", ".join(map(str, alive)))
    return alive[0]


def _pid_alive(stem: str) -> bool:
    if not stem.isdigit():
        return True  # not named by pid: only a connection attempt can tell
    try:
        os.kill(int(stem), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _connect_error(path: Path, e: OSError) -> ControlError:
    if isinstance(e, FileNotFoundError):
        return ControlError(f"no control socket at {path}: is the stack running?")
    if isinstance(e, ConnectionRefusedError):
        return ControlError(f"no stack is listening on {path} (stale socket)")
    if isinstance(e, PermissionError):
        return ControlError(f"{path}: permission denied (the control socket is root's)")
    return ControlError(f"{path}: {os.strerror(e.errno or errno.EIO)}")


def _decode_answer(data: bytes) -> dict[str, Any]:
    try:
        ans = json.loads(data)
    except ValueError as e:
        raise ControlError(f"bad answer from the stack: {e}") from None
    if not isinstance(ans, dict):
        raise ControlError("bad answer from the stack: not an object")
    if "error" in ans:
        raise ControlError(f"the stack refused the request: {ans['error']}")
    return ans


def query(path: str | os.PathLike[str], request: dict[str, Any], *, timeout: float = 10.0,
          max_answer: int = 1 << 28) -> dict[str, Any]:
    """Send one request to the control socket at ``path`` and return the answer."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(encode(request))
            buf = bytearray()
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > max_answer:
                    raise ControlError(f"answer larger than {max_answer} bytes")
        except TimeoutError:
            raise ControlError(f"{path}: no answer within {timeout:g} s") from None
        except OSError as e:
            raise _connect_error(path, e) from None
    return _decode_answer(bytes(buf))


async def aquery(path: str | os.PathLike[str], request: dict[str, Any] | bytes, *,
                 timeout: float = 10.0) -> dict[str, Any]:
    """:func:`query` from inside an event loop; ``request`` may be raw bytes (for tests).

    An ``{"error": ...}`` answer is returned, not raised."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 28)
    try:
        writer.write(request if isinstance(request, bytes) else encode(request))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    ans = json.loads(line)
    if not isinstance(ans, dict):
        raise ControlError("bad answer from the stack: not an object")
    return ans
