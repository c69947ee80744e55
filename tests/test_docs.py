"""The repository documents itself: every protocol row ID cited anywhere in it has an entry in
docs/protocol.md, nothing points at a team folder outside the repository, and the relative links
of README.md and docs/*.md resolve to files in the repository. No network; reads tracked files."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_DOC = "docs/protocol.md"
THIS_FILE = "tests/test_docs.py"

# A cited row: `SES-31`, and the shorthands `CORE-17/20`, `SES-20..24`, `CORE-01…48`.
ROW = re.compile(r"\b(CORE|SES|ESC|AMB|CHG)-(\d+)((?:(?:/|\.\.|…)\d+)*)(?!\w)")
# An entry of docs/protocol.md: a table row whose first cell is the ID.
ENTRY = re.compile(r"^\|\s*((?:CORE|SES|ESC|AMB|CHG)-\d+)\s*\|", re.MULTILINE)
# Built from pieces so that this file does not match itself.
FORBIDDEN = (
    "../" + "shared",
    *(name + ".md" for name in ("TOOLCHAIN", "PROTOCOL", "DESIGN", "STYLE")),
)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@cache
def tracked_texts() -> dict[str, str]:
    """Every tracked file that still exists and reads as UTF-8 text, by repository path."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    texts: dict[str, str] = {}
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def cited_rows(text: str) -> set[str]:
    """Row IDs in `text`, shorthands expanded, numbers as two digits (`SES-9` → `SES-09`)."""
    rows: set[str] = set()
    for match in ROW.finditer(text):
        prefix, first, rest = match.groups()
        numbers = [int(first)]
        for sep, number in re.findall(r"(/|\.\.|…)(\d+)", rest):
            if sep == "/":
                numbers.append(int(number))
            else:
                numbers.extend(range(numbers[-1] + 1, int(number) + 1))
        rows.update(f"{prefix}-{n:02d}" for n in numbers)
    return rows


def documented_rows() -> set[str]:
    text = (ROOT / PROTOCOL_DOC).read_text(encoding="utf-8")
    return {f"{row.split('-')[0]}-{int(row.split('-')[1]):02d}" for row in ENTRY.findall(text)}


def test_cited_rows_parse_shorthands() -> None:
    assert cited_rows("CORE-17/20, SES-20..24 and CORE-01…03; AMB-5") == {
        "CORE-17", "CORE-20", "SES-20", "SES-21", "SES-22", "SES-23", "SES-24",
        "CORE-01", "CORE-02", "CORE-03", "AMB-05",
    }  # fmt: skip


def test_every_cited_row_has_an_entry_in_protocol_md() -> None:
    where: dict[str, str] = {}
    for name, text in tracked_texts().items():
        if name == PROTOCOL_DOC:
            continue
        for row in cited_rows(text):
            where.setdefault(row, name)
    assert len(where) > 100, "expected the code and tests to cite protocol rows"
    missing = sorted(set(where) - documented_rows())
    assert not missing, "rows without an entry in docs/protocol.md: " + ", ".join(
        f"{row} (cited in {where[row]})" for row in missing
    )


def test_no_tracked_file_points_at_the_team_folder() -> None:
    hits = [
        f"{name}: {word}"
        for name, text in tracked_texts().items()
        if name != THIS_FILE
        for word in FORBIDDEN
        if word in text
    ]
    assert not hits, "references to files outside the repository: " + "; ".join(hits)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if target.startswith("#") or SCHEME.match(target):
            continue
        path_part = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (doc.parent / path_part).resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (missing)")
    assert not broken, f"{doc.relative_to(ROOT)}: " + ", ".join(broken)
