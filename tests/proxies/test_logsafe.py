"""apps/logsafe.py: what client text looks like in a log line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from apps.logsafe import escape, field


def test_controls_del_c1_and_backslash_are_escaped() -> None:
    assert escape("a\nb\rc\x1b[31m") == "a\\x0ab\\x0dc\\x1b[31m"
    assert escape("\x7f\x85\x9b") == "\\x7f\\x85\\x9b"
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("x\\x0a") == "x\\\\x0a"   # typed, not a newline: still distinguishable


def test_non_ascii_is_shown_as_escapes() -> None:
    assert escape("caf\u00e9") == "caf\\xe9"
    assert escape("\u202eevil") == "\\u202eevil"       # right-to-left override
    assert escape("\U0001f600") == "\\U0001f600"
    assert escape(b"\xc3\xa9\xff") == "\\xc3\\xa9\\xff"


def test_field_escapes_spaces_and_marks_empty() -> None:
    assert field("alice dest=x") == "alice\\x20dest=x"
    assert field("") == "-" and field(None) == "-" and field(b"") == "-"
    assert escape("a b") == "a b"


@given(st.text())
def test_escaped_text_is_one_line_of_printable_ascii(text: str) -> None:
    for out in (escape(text), field(text)):
        assert all(0x20 <= ord(c) <= 0x7e for c in out)
    assert " " not in field(text)


@given(st.text())
def test_escaping_can_be_undone(text: str) -> None:
    # Unambiguous: Python's own unicode_escape decoding gives the original back.
    assert escape(text).encode("ascii").decode("unicode_escape") == text
