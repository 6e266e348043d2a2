"""Every ``docs/splice.md §N`` cited in code, tests and the README names a section
that the document has, and nothing cites the splice specification by another name."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "splice.md"
#: "docs/splice.md" and the section list after it: "§4", "§1-§5", "§4/§5", "§4.5 and
#: §5.3", across a line break and a comment marker too.
CITE = re.compile(r"docs/splice\.md((?:\s|#:?|//|[/,-]|and|§\d+(?:\.\d+)?)*)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", re.M)


def _sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for top in ("stack", "splice", "apps", "tools", "tests"):
        for path in (ROOT / top).rglob("*"):
            if path.suffix in (".py", ".pkt", ".md") and path.is_file():
                files.append(path)
    return files


def _sections() -> set[str]:
    return set(HEADING.findall(DOC.read_text()))


def test_the_document_numbers_its_sections() -> None:
    numbers = _sections()
    assert {str(n) for n in range(1, 9)} <= numbers
    assert {"1.1", "1.2", "1.3", "5.1", "5.2", "5.3", "5.4", "7.3", "8.1"} <= numbers


def test_cited_sections_exist() -> None:
    numbers = _sections()
    cited: dict[str, set[str]] = {}
    for path in _sources():
        for m in CITE.finditer(path.read_text(errors="replace")):
            for n in SECTION.findall(m.group(1)):
                cited.setdefault(n, set()).add(str(path.relative_to(ROOT)))
    assert cited, "no citation found: the pattern is broken"
    missing = {n: sorted(where) for n, where in cited.items() if n not in numbers}
    assert missing == {}


def test_the_pattern_reads_section_lists() -> None:
    text = "see docs/splice.md §1-§5 and docs/splice.md §4.5 and §5.3; (docs/splice.md\n#: §5.2)"
    found = [SECTION.findall(m.group(1)) for m in CITE.finditer(text)]
    assert found == [["1", "5"], ["4.5", "5.3"], ["5.2"]]


def test_nothing_cites_the_old_name() -> None:
    old = re.compile("SPLICE" + r"\.md")  # the specification's name before docs/
    me = Path(__file__).resolve()
    found = [str(p.relative_to(ROOT)) for p in _sources()
             if p.resolve() != me and old.search(p.read_text(errors="replace"))]
    assert found == []
