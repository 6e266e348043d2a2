"""Run packetdrill-style scripts against this stack on a simulated link.

The stack under test is a :class:`~stack.core.Stack` with a
:class:`~stack.tcp.layer.TcpLayer` at 198.18.0.1; a raw
:class:`~stack.sim.Probe` plays the remote peer 198.18.0.2. Everything runs on the
simulated network's virtual clock, so a 60-second TIME-WAIT costs nothing and every
run is exact. Layers above TCP add calls, option lines and a second wire (198.19.0.1,
peer 198.19.0.2, side ``server``) through :class:`~stack.testing.pd_calls.CallExtension`:
splice.testing.run_script runs ``--splice`` scripts so.

The subset
----------
Times (script time starts at 0):
  ``0.100`` absolute; ``+0.1`` relative to the previous event's *actual* time;
  ``*`` any time (an expected packet may come whenever, within an hour);
  ``0.1~0.3`` / ``+0.1~+0.3`` a range; ``~+0.2`` from the previous event up to 0.2 s
  later. Without a range an outbound packet must appear within the tolerance
  (``--tolerance_usecs=N``, default 4000) of its time.
Packets: ``[side] < FLAGS start:end(len) [ack N] [win N] [<options>]`` is injected,
  ``[side] > ...`` is expected. ``side`` is ``client`` (default) or ``server``.
  Flags are ``S . P F R`` (``U E W`` too), in any combination. As in packetdrill the
  remote peer's sequence numbers are written as they are, the stack's are relative to
  its ISN (learnt from its SYN or SYN-ACK): the ``ack`` of an inbound packet and the
  SACK blocks it carries are relative to the stack's ISN; the ``ack`` and SACK blocks
  of an outbound packet are the remote's own numbers. ``win`` is the raw header
  field; an outbound packet without ``win`` does not check it; an inbound one gets
  65535. Inbound payload is ``len`` zero bytes.
Options: ``mss N``, ``wscale N``, ``sackOK``, ``nop``, ``eol``, ``TS val V ecr E``,
  ``sack L:R [L:R ...]``, in wire order. An outbound packet must carry exactly the
  options listed, in that order (no list: no options; ``<...>``: not checked).
  Timestamps: the stack's TSval space is anchored by the first outbound ``TS val V``
  of a connection (V maps to what the stack sent); later outbound values must match
  within the tolerance in milliseconds plus one, and an inbound ``ecr E`` is
  translated into the stack's space (``ecr 0`` stays 0). ``*`` matches any value in
  an outbound TS option and never anchors.
Calls: ``socket(..., SOCK_STREAM, IPPROTO_TCP)``; ``setsockopt`` with
  SO_REUSEADDR/SO_REUSEPORT (no-ops) or TCP_NODELAY; ``getsockopt(fd, SOL_SOCKET,
  SO_ERROR, [N], [4])`` (N is checked); ``fcntl(fd, F_SETFL, ...)`` (no-op);
  ``bind`` (port from ``htons(N)``, else 8080); ``listen``; ``accept`` (EAGAIN when
  the queue is empty); ``connect`` (``= -1 EINPROGRESS``, to the peer's port 8080 or
  ``htons(N)``); ``write``/``send`` (N bytes); ``read``/``recv`` (count, 0 at end of
  stream, EAGAIN, or the connection's error); ``shutdown`` (SHUT_WR, SHUT_RD,
  SHUT_RDWR); ``close``. The splice kit (splice/testing/packetdrill.py) adds
  ``init_splice``, ``intend_splice`` and ``splice`` under ``--splice``.
Options lines: ``--tolerance_usecs=N``, ``--config=key=value,...`` (TcpConfig
  fields), and those of the extensions in use.

Everything else (blocking call times ``a...b``, shell commands, Python blocks, other
calls, socket options or TCP options) is refused with "unsupported in this runner".
A mismatch raises :class:`ScriptFailure` naming the line, the expected and the actual
packet; a packet the stack sends that no line expects fails too, including any sent
by the last event's time plus the tolerance.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from stack import seq
from stack.core import Stack
from stack.netdev.pcap import PcapTee, PcapWriter
from stack.sim import Probe, SimNetwork
from stack.tcp.api import TcpConfig
from stack.tcp.layer import TcpLayer
from stack.tcp.tcb import Tcb
from stack.testing import pd_wire
from stack.testing.pd_calls import CallExtension, Calls, UnsupportedCall
from stack.testing.pd_parse import (
    KNOWN_OPTIONS,
    Call,
    Event,
    Packet,
    Script,
    ScriptSyntaxError,
    TsOpt,
    parse_script,
)
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket
from stack.wire.errors import WireError
from stack.wire.ipv4 import IPPROTO_TCP, ip_bytes

__all__ = ["CallExtension", "ScriptFailure", "ScriptResult", "ScriptSyntaxError", "Runner",
           "run_script", "parse_script"]

ANY_WAIT = 3600.0
MAX_EVENTS = 200_000
#: Port of the remote peer of a passive open.
REMOTE_PORT = 40000
_ADDRS = {"client": ("198.18.0.1", "198.18.0.2"), "server": ("198.19.0.1", "198.19.0.2")}


class ScriptFailure(AssertionError):
    """The stack did something other than what the script says."""

    def __init__(self, script: str, line: int, message: str) -> None:
        super().__init__(f"{script}:{line}: {message}")
        self.line = line


@dataclass
class Side:
    """One wire of the stack under test and the connection the script talks on."""

    name: str
    probe: Probe
    local_ip: bytes
    remote_ip: bytes
    local_mac: bytes
    ep: pd_wire.Endpoints | None = None
    local_isn: int = 0
    ts_offset: int | None = None
    tcb: Tcb | None = None


@dataclass
class ScriptResult:
    """What a passing run leaves for further checks."""

    name: str
    events: int
    end_time: float
    stack: Stack
    layer: TcpLayer
    counters: dict[str, int] = field(default_factory=dict)
    #: The counters of each extension in use, by its option.
    extension_counters: dict[str, dict[str, int]] = field(default_factory=dict)


class Runner:
    """Runs one parsed script (see the module docstring)."""

    def __init__(self, script: Script, *, config: TcpConfig | None = None,
                 pcap: str | os.PathLike[str] | None = None,
                 extensions: Sequence[type[CallExtension]] = ()) -> None:
        self.script = script
        try:
            self.tolerance = int(script.options.get("tolerance_usecs", "4000")) / 1e6
            tcp_config = _config(config, script)
        except ValueError as e:
            raise ScriptSyntaxError(script.name, 0, f"bad option: {e}") from None
        self.tee = PcapTee(PcapWriter(pcap)) if pcap is not None else None
        self.net = SimNetwork(0, pcap=self.tee, start_time=1000.0)
        self.t0 = self.net.now
        self.stack = self.net.add_host("dut")
        self.layer = TcpLayer(self.stack, config=tcp_config, rng=self.stack.rng)
        self.stack.register_protocol(IPPROTO_TCP, self.layer)
        self.sides: dict[str, Side] = {}
        #: Extensions the caller offers; those whose option the script has are in use.
        self.known_extensions = tuple(extensions)
        used = [ext for ext in extensions if ext.option in script.options]
        for name in dict.fromkeys(["client", *(n for ext in used for n in ext.sides)]):
            self._add_side(name)
        self.extensions = [ext(self) for ext in used]
        self.calls = Calls(self)
        self.pending: deque[tuple[float, Side, bytes]] = deque()
        self.prev = 0.0
        self.event: Event | None = None

    def _add_side(self, name: str) -> None:
        local, remote = _ADDRS[name]
        probe = self.net.add_probe(self.stack, f"{local}/24")
        iface = self.stack.interfaces[-1]
        self.stack.neigh.update(iface, ip_bytes(remote), probe.mac, self.net.now, create=True)
        self.sides[name] = Side(name, probe, ip_bytes(local), ip_bytes(remote), iface.mac)

    # -- clock ------------------------------------------------------------------------
    def now(self) -> float:
        """Current virtual time of the network."""
        return self.net.now

    def script_time(self) -> float:
        """Current time in script seconds."""
        return self.net.now - self.t0

    def _step(self, limit: float) -> bool:
        progressed = self.net.step(limit=self.t0 + limit)
        for side in self.sides.values():
            for frame in side.probe.take():
                if not self._arp(side, frame):
                    self.pending.append((self.script_time(), side, frame))
        return progressed

    def _arp(self, side: Side, frame: bytes) -> bool:
        """Answer the stack's ARP requests for the peer; True if ``frame`` was ARP."""
        if frame[12:14] != b"\x08\x06":
            return False
        try:
            arp = ArpPacket.parse(frame[14:])
        except WireError:
            return True
        if arp.op == ARP_REQUEST and arp.tpa == side.remote_ip:
            reply = ArpPacket(ARP_REPLY, side.probe.mac, side.remote_ip, arp.sha, arp.spa)
            side.probe.send(arp.sha + side.probe.mac + b"\x08\x06" + reply.to_bytes())
        return True

    def advance(self, t: float) -> None:
        """Run the network up to script time ``t``; any packet on the way is unexpected."""
        for _ in range(MAX_EVENTS):
            if not self.pending and not self._step(t):
                break
            if self.pending:
                self._unexpected()
        if self.pending:
            self._unexpected()

    def _unexpected(self) -> None:
        t, side, frame = self.pending[0]
        self.fail(f"unexpected packet at t={t:.6f} on the {side.name} side: "
                  f"{self._describe(side, frame)}")

    # -- failures -----------------------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        """Raise ScriptFailure for the current line."""
        line = self.event.line if self.event is not None else 0
        raise ScriptFailure(self.script.name, line, message)

    def fail_call(self, message: str) -> NoReturn:
        """A call's outcome differs from the script."""
        self.fail(message)

    # -- connections ----------------------------------------------------------------------
    def listening(self, side: Side, port: int) -> None:
        """A listener on ``port``: inbound packets of this side go to it."""
        side.ep = pd_wire.Endpoints(side.remote_ip, REMOTE_PORT, side.local_ip, port)
        side.local_isn, side.ts_offset = 0, None

    def expect_connection(self, side: Side) -> None:
        """An active open is about to start on ``side``."""
        side.ts_offset = None

    def connected(self, side: Side, tcb: Tcb) -> None:
        """An active open on ``side`` by ``tcb``."""
        side.tcb = tcb
        side.ep = pd_wire.Endpoints(side.remote_ip, tcb.remote_port, side.local_ip,
                                    tcb.local_port)

    # -- events ---------------------------------------------------------------------------
    def window(self, ev: Event) -> tuple[float, float, float]:
        """(earliest, latest, nominal) script time of an event."""
        spec = ev.time
        if spec.kind == "any":
            return self.prev, self.prev + ANY_WAIT, self.prev
        base = self.prev if spec.kind == "rel" else 0.0
        lo, hi = base + spec.lo, base + spec.hi
        if spec.ranged:
            return lo, hi, lo
        return lo - self.tolerance, hi + self.tolerance, lo

    def run(self) -> ScriptResult:
        """Run every event; ScriptFailure at the first difference."""
        try:
            for ev in self.script.events:
                self.event = ev
                lo, hi, at = self.window(ev)
                if at < self.script_time() - self.tolerance and ev.time.kind == "abs":
                    self.fail(f"time {at:g} is before the previous event "
                              f"({self.script_time():g})")
                if isinstance(ev.what, Packet) and ev.what.direction == ">":
                    self.prev = self._expect(ev.what, lo, hi)
                    continue
                at = max(at, self.script_time())
                self.advance(at)
                if isinstance(ev.what, Packet):
                    self._inject(ev.what)
                else:
                    self._call(ev.what)
                self.net.flush()
                self.prev = at
            self.advance(self.prev + self.tolerance)
        finally:
            if self.tee is not None:
                self.tee.close()
        return ScriptResult(self.script.name, len(self.script.events), self.prev, self.stack,
                            self.layer, dict(self.layer.counters),
                            {ext.option: dict(ext.counters()) for ext in self.extensions})

    def _inject(self, pkt: Packet) -> None:
        side = self.sides.get(pkt.side)
        if side is None:
            self.fail(f"no {pkt.side} side (an extension's option adds one, e.g. --splice "
                      "with splice.testing.run_script)")
        if side.ep is None:
            self.fail(f"inbound packet on the {side.name} side before any listen() or "
                      "connect() gave it a connection")
        try:
            frame = pd_wire.build_frame(pkt, side.ep, side.local_isn, side.ts_offset,
                                        side.local_mac, side.probe.mac)
        except ValueError as e:
            self.fail(str(e))
        side.probe.send(frame)

    def _call(self, call: Call) -> None:
        try:
            result, errno = self.calls.call(call.name, call.args)
        except UnsupportedCall as e:
            self.fail(str(e))
        want = f"{call.result}" + (f" {call.errno}" if call.errno else "")
        got = f"{result}" + (f" {errno}" if errno else "")
        if result != call.result or (call.result < 0 and errno != call.errno):
            self.fail(f"{call.name}() returned {got}, the script expects {want}")

    # -- outbound packets ---------------------------------------------------------------
    def _expect(self, pkt: Packet, lo: float, hi: float) -> float:
        for _ in range(MAX_EVENTS):
            if self.pending or not self._step(hi):
                break
        if not self.pending:
            self.fail(f"expected {self._script_text(pkt)} by t={hi:.6f}; nothing was sent")
        t, side, frame = self.pending.popleft()
        if t < lo:
            self.fail(f"packet sent too early at t={t:.6f} (window starts at {lo:.6f}):\n"
                      f"  script: {self._script_text(pkt)}\n"
                      f"  actual: {self._describe(side, frame)}")
        if side.name != pkt.side:
            self.fail(f"packet on the {side.name} side, the script expects one on the "
                      f"{pkt.side} side: {self._describe(side, frame)}")
        seen = pd_wire.decode_frame(frame)
        if seen is None:
            self.fail(f"not a TCP/IPv4 frame: {frame[:64].hex()}")
        diffs = self._compare(pkt, side, seen)
        if diffs:
            self.fail(f"outbound packet differs at t={t:.6f} ({', '.join(diffs)}):\n"
                      f"  script: {self._script_text(pkt)}\n"
                      f"  actual: {self._seen_text(side, seen)}")
        return t

    def _compare(self, pkt: Packet, side: Side, seen: pd_wire.Seen) -> list[str]:
        diffs: list[str] = []
        if not seen.checksum_ok:
            diffs.append("bad TCP checksum")
        ep = side.ep
        if ep is not None and (seen.sport, seen.dport, seen.dst) != (
                ep.local_port, ep.remote_port, ep.remote_ip):
            diffs.append(f"ports {seen.sport}->{seen.dport}, expected "
                         f"{ep.local_port}->{ep.remote_port}")
        if seen.flags != pkt.flags:
            diffs.append("flags")
        if pkt.flags & 0x02 and seen.flags & 0x02:
            new_isn = seq.add(seen.seq, -pkt.start)
            if new_isn != side.local_isn:
                side.local_isn, side.ts_offset = new_isn, None
        if seq.sub(seen.seq, side.local_isn) != pkt.start:
            diffs.append("seq")
        if seen.payload_len != seq.sub(pkt.end, pkt.start):
            diffs.append("length")
        if pkt.ack is not None and seen.ack != pkt.ack:
            diffs.append("ack")
        if pkt.ack is None and seen.flags & 0x10 and pkt.flags & 0x10:
            diffs.append("ack (the script gives none)")
        if pkt.win is not None and seen.win != pkt.win:
            diffs.append("win")
        if pkt.options is not None and not self._options_match(pkt.options, side, seen):
            diffs.append("options")
        return diffs

    def _options_match(self, want: list, side: Side, seen: pd_wire.Seen) -> bool:
        got = seen.options
        if len(want) != len(got):
            return False
        for w, g in zip(want, got, strict=True):
            if w[0] != g[0]:
                return False
            if w[0] == "TS":
                if not self._ts_match(w[1], g[1], side):
                    return False
            elif w != g:
                return False
        return True

    def _ts_match(self, want: TsOpt, got: TsOpt, side: Side) -> bool:
        if want.ecr is not None and want.ecr != got.ecr:
            return False
        if want.val is None:
            return True
        assert got.val is not None  # a sent packet's TS option has both values (pd_wire)
        if side.ts_offset is None:
            side.ts_offset = seq.sub(got.val, want.val)
            return True
        slack = int(self.tolerance * 1000) + 1
        return abs(seq.sub(seq.add(got.val, -side.ts_offset), want.val)) <= slack

    # -- text ------------------------------------------------------------------------------
    def _script_text(self, pkt: Packet) -> str:
        return pd_wire.packet_text(pkt.direction, pkt.flags, pkt.start,
                                   seq.sub(pkt.end, pkt.start), pkt.ack, pkt.win, pkt.options)

    def _seen_text(self, side: Side, seen: pd_wire.Seen) -> str:
        opts = []
        for o in seen.options:
            if o[0] == "TS" and side.ts_offset is not None:
                o = ("TS", TsOpt(seq.add(o[1].val, -side.ts_offset), o[1].ecr))
            opts.append(o)
        ack = seen.ack if seen.flags & 0x10 else None
        return pd_wire.packet_text(">", seen.flags, seq.sub(seen.seq, side.local_isn),
                                   seen.payload_len, ack, seen.win, opts)

    def _describe(self, side: Side, frame: bytes) -> str:
        seen = pd_wire.decode_frame(frame)
        if seen is None:
            return f"non-TCP frame {frame[:64].hex()}"
        return self._seen_text(side, seen)


def _config(config: TcpConfig | None, script: Script) -> TcpConfig:
    cfg = config or TcpConfig()
    text = script.options.get("config", "")
    changes: dict[str, Any] = {}
    types = {f.name: f.type for f in dataclasses.fields(TcpConfig)}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        if key not in types:
            raise ValueError(f"--config: no TcpConfig field {key!r}")
        kind = types[key]
        if kind in ("bool", bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif kind in ("int", int, "float", float):
            number = (int if kind in ("int", int) else float)(value)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"--config: {key}={value} must be a finite number >= 0")
            changes[key] = number
        elif kind in ("str", str):
            changes[key] = value
        else:
            raise ValueError(f"--config: {key} cannot be set from a script")
    return dataclasses.replace(cfg, **changes)


def run_script(source: str | os.PathLike[str], *, text: str | None = None,
               config: TcpConfig | None = None,
               pcap: str | os.PathLike[str] | None = None,
               extensions: Sequence[type[CallExtension]] = ()) -> ScriptResult:
    """Parse and run a script file (or ``text``, named ``source``); raises
    ScriptSyntaxError or ScriptFailure. ``pcap`` records every frame of the run;
    ``extensions`` may add calls and option lines (see CallExtension)."""
    name = os.fspath(source)
    if text is None:
        text = Path(source).read_text()
    options = KNOWN_OPTIONS + tuple(ext.option for ext in extensions)
    script = parse_script(text, Path(name).name, options)
    return Runner(script, config=config, pcap=pcap, extensions=extensions).run()
