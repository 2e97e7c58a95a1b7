"""The docs index lists every page, no relative link in docs/ points at a missing file or heading, and code,
tests and scripts cite only docs/ pages and sections that exist (never a file outside the repository)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    # GitHub's anchor rule: lowercase, drop punctuation except - and _, spaces become -.
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {m.split("#")[0] for m in LINK.findall(index)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert pages - linked == set(), "pages missing from docs/index.md"


def test_relative_links_resolve() -> None:
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked (no network in tests)
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


# --- references from code, tests and scripts into docs/ -----------------------------------------------------------

CITED = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(?:#([\w-]+))?")
# Files a contributor who clones the repository does not have (an outside product brief, an interface list).
OUTSIDE = re.compile(r"\b(?:DESIGN|INTERFACES)(?:\.md\b|\s+§)")
SCANNED = ["src", "tests", "scripts", "policies", "docs", "examples", "benchmarks", "README.md", "Makefile"]


def _repo_texts():
    for name in SCANNED:
        top = ROOT / name
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in {".pyc", ".whl"}:
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def test_cited_docs_pages_and_sections_exist() -> None:
    """`docs/contracts.md#exit-codes` in a docstring or comment names a page and a heading that exist."""
    broken = []
    for path, text in _repo_texts():
        for number, line in enumerate(text.splitlines(), 1):
            for page, anchor in CITED.findall(line):
                where = f"{path.relative_to(ROOT)}:{number}: docs/{page}{'#' + anchor if anchor else ''}"
                if not (DOCS / page).is_file():
                    broken.append(f"{where} (no such page)")
                elif anchor and anchor not in _anchors(DOCS / page):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_nothing_cites_a_file_outside_the_repository() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path, text in _repo_texts()
        for number, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not cited, "cite docs/ instead (docs/contracts.md holds the contracts):\n" + "\n".join(cited)
