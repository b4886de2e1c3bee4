"""Every relative link in README.md and docs/*.md leads somewhere: a file of the repo, and where the link
names an anchor in a Markdown file, a heading of that file (GitHub's slug: lower case, punctuation dropped,
spaces as hyphens, a repeated heading numbered -1, -2, ...). A renamed doc or heading fails here, not in a
newcomer's browser. And docs/ARCHITECTURE.md names every module of the compiler's rooms, so a new one is
described where a newcomer looks."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def heading_anchors(markdown: str) -> set:
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors | set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", markdown))


def relative_links(doc: Path) -> list:
    return [target for target in LINK.findall(CODE_SPAN.sub("", FENCE.sub("", doc.read_text(encoding="utf-8"))))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not checked


def broken_links(doc: Path) -> list:
    broken = []
    for target in relative_links(doc):
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path) if path else doc
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_relative_links_lead_somewhere(doc):
    assert broken_links(doc) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "OTHER.md").write_text("# Quick start\n## Quick start\n```\n# not a heading\n```\n")
    doc = tmp_path / "README.md"
    doc.write_text("[a](OTHER.md#quick-start) [b](OTHER.md#quick-start-1) [c](https://example.com/x)\n"
                   "[d](GONE.md) [e](OTHER.md#not-a-heading) [f](#self) `[g](in-code.md)`?\n# Self\n")
    assert broken_links(doc) == ["GONE.md (no such file)", "OTHER.md#not-a-heading (no such heading)"]


def test_the_docs_have_links_to_check():
    assert len(relative_links(REPO / "README.md")) >= 5


def test_architecture_names_every_module_of_the_compiler():
    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = [path for room in ("passes", "patterns", "pipelines") for path in sorted((REPO / room).rglob("*.py"))
               if path.name != "__init__.py" and "__pycache__" not in path.parts]
    assert len(modules) > 80
    assert [str(path.relative_to(REPO)) for path in modules if f"`{path.name}`" not in architecture] == []
