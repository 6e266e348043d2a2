"""Parser of the packetdrill subset run by :mod:`stack.testing.packetdrill`.

A script is a list of events, one per line, each with a time specification. This
module only turns text into :class:`Script`; it knows nothing about the stack. Every
construct outside the subset is refused here, with the line number and an
"unsupported in this runner: ..." message, so a script never half-runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Flag letters of the packet lines (tcpdump's, as packetdrill writes them).
FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20,
             "E": 0x40, "W": 0x80}
SIDES = ("client", "server")


class ScriptSyntaxError(ValueError):
    """The script cannot be parsed, or uses something outside the subset."""

    def __init__(self, name: str, line: int, message: str) -> None:
        super().__init__(f"{name}:{line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class TimeSpec:
    """When an event happens: ``kind`` is "abs", "rel" (to the previous event's actual
    time) or "any" (``*``); ``lo``/``hi`` bound a range (``a~b``), else both are ``at``."""

    kind: str
    lo: float
    hi: float
    ranged: bool = False


@dataclass(frozen=True, slots=True)
class TsOpt:
    """A TS option in a script; ``None`` for a value written ``*`` (any)."""

    val: int | None
    ecr: int | None


#: One option of a packet line: ("nop",), ("eol",), ("mss", n), ("wscale", n),
#: ("sackOK",), ("TS", TsOpt), ("sack", ((left, right), ...)).
OptItem = tuple


@dataclass(slots=True)
class Packet:
    """A packet line: ``direction`` "<" (into the stack) or ">" (out of it)."""

    side: str
    direction: str
    flags: int
    start: int
    end: int
    ack: int | None = None
    win: int | None = None
    options: list[OptItem] | None = field(default_factory=list)  # None: "<...>"


@dataclass(slots=True)
class Call:
    """A socket call line: ``name(args) = result [ERRNO (text)]``."""

    name: str
    args: list[str]
    result: int
    errno: str | None = None


@dataclass(slots=True)
class Event:
    """One script line: its number, its time and a Packet or a Call."""

    line: int
    time: TimeSpec
    what: Packet | Call
    text: str


@dataclass(slots=True)
class Script:
    """A parsed script with its option lines (``--name=value``)."""

    name: str
    events: list[Event]
    options: dict[str, str]


_NUM = r"[0-9]*\.?[0-9]+"
_TIME = re.compile(rf"^(\*|~\+?{_NUM}|\+?{_NUM}(?:~\+?{_NUM})?)(?=\s|$)")
_CALL = re.compile(r"^([a-z_]+)\((.*)\)\s*=\s*(-?\d+)\s*([A-Z][A-Z0-9_]*)?\s*(\(.*\))?\s*$")
_SEQ = re.compile(r"^(\d+):(\d+)\((\d+)\)$")
_OPTION_LINE = re.compile(r"^--([a-z_]+)(?:=(.*))?$")
#: Option lines of the runner itself (extensions add theirs: pd_calls.CallExtension).
KNOWN_OPTIONS = ("tolerance_usecs", "config")
#: Largest payload of one packet line (an IPv4 datagram of 64 KB, minimal headers).
MAX_PAYLOAD = 65535 - 40


def _strip_comments(text: str) -> list[str]:
    """Lines with ``//`` and ``/* */`` comments blanked (line numbers kept)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return [re.sub(r"//.*$", "", ln).strip() for ln in text.split("\n")]


def _time(tok: str) -> TimeSpec:
    if tok == "*":
        return TimeSpec("any", 0.0, 0.0)
    if tok.startswith("~"):
        return TimeSpec("rel", 0.0, float(tok[1:].lstrip("+")), True)
    a, _, b = tok.partition("~")
    kind = "rel" if a.startswith("+") else "abs"
    lo = float(a.lstrip("+"))
    if not b:
        return TimeSpec(kind, lo, lo)
    if b.startswith("+") != a.startswith("+"):
        raise ValueError(f"range {tok!r} mixes absolute and relative times")
    hi = float(b.lstrip("+"))
    if hi < lo:
        raise ValueError(f"range {tok!r} ends before it starts")
    return TimeSpec(kind, lo, hi, True)


def split_args(text: str) -> list[str]:
    """Comma-separated arguments, commas inside brackets or braces kept."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur or out:
        out.append("".join(cur).strip())
    return out


def _int(tok: str, what: str) -> int:
    if not tok.isdigit():
        raise ValueError(f"{what}: expected a number, got {tok!r}")
    n = int(tok)
    if n >= 1 << 32:
        raise ValueError(f"{what}: {n} does not fit in 32 bits")
    return n


def _ts_value(tok: str) -> int | None:
    return None if tok == "*" else _int(tok, "TS value")


def _option(item: str) -> OptItem:
    words = item.split()
    if not words:
        raise ValueError("empty option")
    kind, rest = words[0], words[1:]
    if kind in ("nop", "eol", "sackOK") and not rest:
        return (kind,)
    if kind in ("mss", "wscale") and len(rest) == 1:
        value = _int(rest[0], kind)
        if value > (0xFFFF if kind == "mss" else 0xFF):
            raise ValueError(f"{kind} {value} does not fit in its field")
        return (kind, value)
    if kind == "TS" and len(rest) == 4 and rest[0] == "val" and rest[2] == "ecr":
        return ("TS", TsOpt(_ts_value(rest[1]), _ts_value(rest[3])))
    if kind == "sack" and 1 <= len(rest) <= 4:
        blocks = []
        for r in rest:
            left, sep, right = r.partition(":")
            if not sep:
                raise ValueError(f"SACK block {r!r}: expected left:right")
            blocks.append((_int(left, "SACK edge"), _int(right, "SACK edge")))
        return ("sack", tuple(blocks))
    raise ValueError(f"unsupported in this runner: TCP option {item!r}")


def _options(text: str) -> list[OptItem] | None:
    body = text.strip()
    if not (body.startswith("<") and body.endswith(">")):
        raise ValueError(f"options {text!r}: expected <...>")
    body = body[1:-1].strip()
    if body == "...":
        return None
    return [_option(item.strip()) for item in body.split(",")] if body else []


def _flags(tok: str) -> int:
    bits = 0
    for ch in tok:
        if ch not in FLAG_BITS:
            raise ValueError(f"flags {tok!r}: unknown flag {ch!r} (known: {''.join(FLAG_BITS)})")
        bits |= FLAG_BITS[ch]
    return bits


def parse_packet(side: str, direction: str, text: str) -> Packet:
    """``FLAGS start:end(len) [ack N] [win N] [<options>]`` (ValueError if malformed)."""
    head, lt, opts = text.partition("<")
    words = head.split()
    if len(words) < 2:
        raise ValueError(f"packet {text!r}: expected flags and start:end(len)")
    flags = _flags(words[0])
    m = _SEQ.match(words[1])
    if m is None:
        raise ValueError(f"sequence {words[1]!r}: expected start:end(len)")
    start, end, length = (int(g) for g in m.groups())
    if (end - start) % (1 << 32) != length:
        raise ValueError(f"sequence {words[1]!r}: end - start is not {length}")
    if length > MAX_PAYLOAD:
        raise ValueError(f"payload of {length} bytes: at most {MAX_PAYLOAD} fit in a packet")
    pkt = Packet(side, direction, flags, start % (1 << 32), end % (1 << 32))
    rest = words[2:]
    while rest:
        key = rest.pop(0)
        if key not in ("ack", "win") or not rest:
            raise ValueError(f"unsupported in this runner: packet field {key!r}")
        value = _int(rest.pop(0), key)
        if key == "ack":
            pkt.ack = value
        else:
            pkt.win = value
    if lt:
        pkt.options = _options(lt + opts)
    if direction == "<" and pkt.options is None:
        raise ValueError("an inbound packet needs its options spelled out, not <...>")
    return pkt


def _call(rest: str) -> Call:
    m = _CALL.match(rest)
    if m is None:
        raise ValueError(f"cannot parse {rest!r} as a call: expected name(args) = result")
    name, args, result, errno, _text = m.groups()
    if int(result) < 0 and errno is None:
        raise ValueError("a negative result needs an errno name (e.g. -1 EAGAIN)")
    return Call(name, split_args(args), int(result), errno)


def _event(rest: str) -> Packet | Call:
    if not rest:
        raise ValueError("nothing follows the time")
    if rest.startswith("`") or rest.startswith("%{"):
        raise ValueError("unsupported in this runner: shell commands and Python blocks")
    words = rest.split(None, 1)
    side = "client"
    if words and words[0] in SIDES and len(words) > 1:
        side, rest = words[0], words[1]
    if rest[:1] in ("<", ">"):
        return parse_packet(side, rest[0], rest[1:])
    if side != "client" or rest.split()[0] in SIDES:
        raise ValueError("a side name must be followed by < or >")
    return _call(rest)


def parse_script(text: str, name: str = "<script>",
                 options: tuple[str, ...] = KNOWN_OPTIONS) -> Script:
    """Parse a whole script whose option lines may be ``options``; ScriptSyntaxError
    names the first bad line."""
    known = options
    events: list[Event] = []
    found: dict[str, str] = {}
    for no, line in enumerate(_strip_comments(text), start=1):
        if not line:
            continue
        opt = _OPTION_LINE.match(line)
        if opt is not None:
            if events:
                raise ScriptSyntaxError(name, no, "option lines must come before events")
            if opt.group(1) not in known:
                raise ScriptSyntaxError(name, no, f"unsupported in this runner: option "
                                                  f"--{opt.group(1)}")
            found[opt.group(1)] = opt.group(2) or ""
            continue
        m = _TIME.match(line)
        if m is None:
            if re.match(rf"^\+?{_NUM}\.\.\.", line):
                raise ScriptSyntaxError(name, no, "unsupported in this runner: blocking "
                                                  "call times (a...b)")
            raise ScriptSyntaxError(name, no, f"expected a time at the start of {line!r}")
        try:
            spec = _time(m.group(1))
            what = _event(line[m.end():].strip())
        except ValueError as e:
            raise ScriptSyntaxError(name, no, str(e)) from None
        events.append(Event(no, spec, what, line))
    return Script(name, events, found)
