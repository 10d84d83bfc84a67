"""The documents a newcomer reads: every relative link and anchor in README.md, docs/ and
bench/README.md leads somewhere, and the README stays a front door (at most 300 lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import TOP

DOCUMENTS = sorted([TOP / "README.md", TOP / "bench" / "README.md", *(TOP / "docs").glob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"[`*]|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced:
            out += LINK.findall(re.sub(r"`[^`]*`", "", line))
    return out


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(TOP)))
def test_every_relative_link_and_anchor_leads_somewhere(document: Path):
    broken = []
    for target in links(document):
        if re.match(r"[a-z]+:", target):
            continue  # a web address: not checked offline
        file, _, anchor = target.partition("#")
        dest = (document.parent / file).resolve() if file else document
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    lines = (TOP / "README.md").read_text().splitlines()
    assert len(lines) <= 300, len(lines)


def test_the_link_checker_finds_a_broken_link_and_anchor(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# The `code` index (omero-iscc)\n\n[a](#the-code-index-omero-iscc) [b](#nowhere) [c](no.md)\n")
    assert anchors(page) == {"the-code-index-omero-iscc"}
    assert links(page) == ["#the-code-index-omero-iscc", "#nowhere", "no.md"]
