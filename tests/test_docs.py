"""Every relative link in README.md and docs/**/*.md points to a file that exists, and to a heading
of that file when it names an anchor (GitHub's heading slugs). Links inside code are not links."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.S | re.M)  # fences may be indented (lists)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, hyphens and
    spaces kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings (a repeated heading gets ``-1``, ``-2``, ...)."""
    out: set[str] = set()
    counts: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = counts.get(base, 0)
        counts[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    """Targets of the markdown links in ``path`` that are neither URLs nor mail addresses."""
    return [t for t in _LINK.findall(_prose(path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_pages_exist():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/getting-started.md", "docs/recipes/index.md"} <= names
    assert "docs/recipes.md" not in names  # split into docs/recipes/


def test_slug_follows_github():
    assert slug("## ICFIL: inversion calibration (meta-test only)".lstrip("# ")) == (
        "icfil-inversion-calibration-meta-test-only")
    assert slug("Scenarios (`benchmarks/cifar_fs.py --scenario NAME`)") == "scenarios-benchmarkscifar_fspy---scenario-name"
    assert slug("3. Read a run directory") == "3-read-a-run-directory"


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or heading anchor does not exist."""
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return broken


def test_broken_links_are_found(tmp_path):
    (tmp_path / "b.md").write_text("# B page\n\n## Two words\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md) [ok](b.md#two-words) [ok](#a) [web](https://x.org/y.md)\n\n# A\n"
                    "[gone](c.md) [bad anchor](b.md#three) `[code](d.md)`\n```\n[fenced](e.md)\n```\n"
                    "* item\n\n  ```\n  [indented fence](f.md)\n  # not a heading\n  ```\n")
    assert broken_links(page) == ["c.md: no such file", "b.md#three: no heading with anchor #three in b.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
