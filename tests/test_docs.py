"""The documentation holds together: the README's commands are Makefile targets, every relative link and
picture in README.md and docs/*.md points at a file of the repository (and at a heading that exists), the
README stays a short front door, and each guide is linked from it. Pure text checks: nothing is graded."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
GUIDES = ["students.md", "instructors.md", "batch.md", "security.md"]
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The Markdown outside code: fenced blocks and code spans removed (a `[x](y)` there is no link)."""
    return CODE_SPAN.sub(" ", FENCE.sub(" ", text))


def code(text: str) -> list[str]:
    """The text of every fenced block and code span."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    return blocks + [m.group(2) for m in CODE_SPAN.finditer(FENCE.sub(" ", text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for m in HEADING.finditer(FENCE.sub(" ", path.read_text())):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    targets = [m.group(1) for m in LINK.finditer(prose(path.read_text()))]
    return [t for t in targets if not re.match(r"^(https?:|mailto:|#)", t)]


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_picture_resolves(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve()
        if not resolved.exists() or REPO not in [resolved, *resolved.parents]:
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_the_checker_sees_links_and_skips_code() -> None:
    sample = "see [a](docs/a.md#x), ![p](img/p.png) and [w](https://x.org); `[no](code.md)`\n```\n[no](f.md)\n```\n"
    assert LINK.findall(prose(sample)) == ["docs/a.md#x", "img/p.png", "https://x.org"]
    assert slug("For instructors: a whole class at once (`mp-grader batch`)") == (
        "for-instructors-a-whole-class-at-once-mp-grader-batch")


def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\- ]+?)\s*:(?![:=])", line)
        if m:
            targets.update(m.group(1).split())
    return targets


def test_every_make_command_in_the_readme_is_a_makefile_target() -> None:
    named = {m.group(1) for block in code(README.read_text())
             for m in re.finditer(r"(?<![\w-])make\s+([A-Za-z][\w-]*)(?!\S*=)", block)}
    assert {"grade", "test"} <= named, named
    assert not named - makefile_targets(), f"not in the Makefile: {sorted(named - makefile_targets())}"


def test_every_make_command_in_the_guides_is_a_makefile_target() -> None:
    named = {m.group(1) for guide in GUIDES for block in code((REPO / "docs" / guide).read_text())
             for m in re.finditer(r"(?<![\w-])make\s+([A-Za-z][\w-]*)(?!\S*=)", block)}
    assert not named - makefile_targets(), f"not in the Makefile: {sorted(named - makefile_targets())}"


def test_the_layout_table_names_files_that_exist() -> None:
    rows = [line for line in README.read_text().split("## Layout", 1)[1].splitlines() if line.startswith("| `")]
    assert rows
    missing = [p for row in rows for p in re.findall(r"`([^`]+)`", row.split("|")[1])
               if not (REPO / p).exists()]
    assert not missing, missing


def test_the_readme_is_a_short_front_door() -> None:
    assert len(README.read_text().splitlines()) < 150


@pytest.mark.parametrize("guide", GUIDES)
def test_each_guide_exists_and_is_linked_from_the_readme(guide: str) -> None:
    assert (REPO / "docs" / guide).is_file()
    assert f"docs/{guide}" in {t.partition("#")[0] for t in relative_links(README)}
