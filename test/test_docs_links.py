"""The README and docs/ point at what is in the tree: every relative link reaches a file (and its heading,
for an anchor), and every file path they quote (`docs/...`, `models/...`, ...; `{a,b}` and `*` allowed)
matches one. Numbers in the README are only as good as the files they cite."""

from __future__ import annotations

import glob
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
QUOTED_PATH = re.compile(r"`((?:docs|models|config|scripts|test|mobile_vla_ros|launch)/[^`\s<>]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {heading_anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", path.read_text(), re.M)}


def expand_braces(pattern: str) -> list[str]:
    """`a{b,c}d` -> [`abd`, `acd`] (as the shell expands it; nested braces are not used)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    return [expanded for alternative in match.group(1).split(",")
            for expanded in expand_braces(pattern[:match.start()] + alternative + pattern[match.end():])]


def broken_references(doc: Path) -> list[str]:
    text, broken = doc.read_text(), []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path) if path else doc
        if not file.exists():
            broken.append(f"link {target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"link {target}: no such heading")
    for match in QUOTED_PATH.finditer(text):
        quoted = match.group(1)
        for pattern in expand_braces(quoted.replace("…", "*")):
            if not glob.glob(str(ROOT / pattern)):
                broken.append(f"path {quoted}: nothing matches {pattern}")
    return broken


def test_the_check_finds_a_missing_file_a_missing_heading_and_a_missing_path(tmp_path):
    (tmp_path / "other.md").write_text("# A heading: with punctuation\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#a-heading-with-punctuation) [gone](missing.md) [no](other.md#nope) "
                   "`docs/no_such_file_{a,b}.json` [web](https://example.org)\n")
    broken = broken_references(doc)
    assert broken == ["link missing.md: no such file", "link other.md#nope: no such heading",
                      "path docs/no_such_file_{a,b}.json: nothing matches docs/no_such_file_a.json",
                      "path docs/no_such_file_{a,b}.json: nothing matches docs/no_such_file_b.json"]


def test_readme_and_docs_reference_only_what_exists():
    broken = {doc.relative_to(ROOT).as_posix(): b for doc in DOCS if (b := broken_references(doc))}
    assert broken == {}
