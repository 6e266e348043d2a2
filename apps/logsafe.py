"""Client-controlled text made safe for log lines.

Usernames, SOCKS userids and hostnames, request targets and header values come
from the network. Written raw into a log, a newline forges a line, an escape
sequence reaches the terminal of whoever reads the log and a space shifts the
fields of a space-separated line. :func:`escape` turns every such character into
a visible escape, so that one logged value is one line of printable ASCII and the
original can be read back without ambiguity.
"""

from __future__ import annotations

import re

__all__ = ["escape", "field"]

#: Anything but printable ASCII, plus the backslash (escaped so that ``\x0a`` in a
#: log always means an escaped byte, never a client who typed those four characters).
_UNSAFE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")
_UNSAFE_FIELD = re.compile(r"[^\x21-\x5b\x5d-\x7e]")


def _code(match: re.Match[str]) -> str:
    c = match.group()
    if c == "\\":
        return "\\\\"
    o = ord(c)
    if o < 0x100:      # C0 controls, DEL, C1 controls, Latin-1 (and space in a field)
        return f"\\x{o:02x}"
    if o < 0x10000:    # the rest of the BMP, bidi overrides included
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _text(value: str | bytes | bytearray | memoryview) -> str:
    if isinstance(value, str):
        return value
    # Bytes that are not text stay bytes: each one >= 0x80 becomes \xNN.
    return bytes(value).decode("latin-1")


def escape(value: str | bytes | bytearray | memoryview) -> str:
    """``value`` with control characters (C0, DEL, C1), backslash and non-ASCII
    escaped as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` (``\\\\`` for a backslash).
    Spaces are kept. Bytes are escaped byte by byte."""
    return _UNSAFE.sub(_code, _text(value))


def field(value: str | bytes | bytearray | memoryview | None) -> str:
    """One field of a space-separated log line: :func:`escape` plus spaces as
    ``\\x20``; ``-`` when empty or None."""
    if value is None:
        return "-"
    text = _UNSAFE_FIELD.sub(_code, _text(value))
    return text or "-"
