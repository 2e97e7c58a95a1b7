"""The module maps match the tree: every module docs/architecture.md's module map names exists, and
tests/README.md's map names only existing files, lists every test file and covers every source module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "swiftdeploy"
TICKED = re.compile(r"`([^`]+)`")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _table(path: Path, heading: str) -> list[list[str]]:
    """The cells of the first table under `heading`, without its header and separator rows."""
    text = path.read_text(encoding="utf-8")
    assert heading in text, f"{path.relative_to(ROOT)} has no {heading!r} section"
    rows = []
    for line in text.split(heading, 1)[1].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    assert len(rows) > 1, f"no table under {heading!r} in {path.relative_to(ROOT)}"
    return rows[1:]


def _is_path(token: str) -> bool:
    return " " not in token and (token.endswith((".py", "/")))


def _resolve(token: str, bases: list[Path]) -> Path | None:
    for base in bases:
        if (base / token).exists():
            return base / token
    return None


def _top_level_names(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def _dotted_problem(token: str, bases: list[Path]) -> str | None:
    """What is wrong with `module.name` (`fsutil.atomic_write`, `swiftdeploy.history.EVENTS`, `runtime.local`);
    None when it resolves or is not ours (`Decision.to_dict`, `os.replace`)."""
    parts = token.split(".")
    if parts[0] in ("swiftdeploy", "demo_api"):
        bases, parts = [ROOT / "src" / parts[0]], parts[1:]
    elif not any((base / parts[0]).is_dir() or (base / f"{parts[0]}.py").is_file() for base in bases):
        return None
    for base in bases:
        here = base
        for i, part in enumerate(parts):
            if (here / part).is_dir():
                here = here / part
            elif (here / f"{part}.py").is_file():
                rest = parts[i + 1 :]
                if not rest or rest[0] in _top_level_names(here / f"{part}.py"):
                    return None
                return f"{(here / part).relative_to(ROOT)}.py defines no {rest[0]}"
            else:
                break
        else:
            return None
    return f"no module {'/'.join(parts)}"


def _missing_in_architecture_map() -> list[str]:
    missing = []
    for cells in _table(ROOT / "docs" / "architecture.md", "## Module map"):
        named = [t for t in TICKED.findall(cells[0]) if _is_path(t)]
        row = ", ".join(named) or cells[0]
        bases = [PACKAGE, ROOT / "src", ROOT]
        packages = []
        for token in named:
            found = _resolve(token, bases)
            if found is None:
                missing.append(f"`{token}` (row {row}): no src/swiftdeploy/{token}, src/{token} or {token}")
            elif found.is_dir():
                packages.append(found)
        # The other cells name modules inside the row's package (`model.py` in the `manifest/` row) or in the
        # package root, and module attributes (`fsutil.atomic_write`).
        for token in (t for cell in cells[1:] for t in TICKED.findall(cell)):
            if _is_path(token):
                if _resolve(token, [*packages, *bases]) is None:
                    inside = " or ".join(f"{p.relative_to(ROOT)}/{token}" for p in [*packages, PACKAGE])
                    missing.append(f"`{token}` (row {row}): no {inside}")
            elif DOTTED.fullmatch(token) and (problem := _dotted_problem(token, [*packages, PACKAGE])):
                missing.append(f"`{token}` (row {row}): {problem}")
    return missing


def test_every_module_the_architecture_map_names_exists() -> None:
    missing = _missing_in_architecture_map()
    assert not missing, "docs/architecture.md's module map names what is not in the tree:\n" + "\n".join(missing)


def _tests_map() -> list[tuple[list[str], list[str]]]:
    return [
        (TICKED.findall(source), [t for t in TICKED.findall(tests) if t.startswith("tests/")])
        for source, tests in _table(ROOT / "tests" / "README.md", "## Map")
    ]


def test_tests_readme_map_names_existing_files() -> None:
    missing = [
        f"`{path}`" for sources, tests in _tests_map() for path in [*sources, *tests] if not (ROOT / path).exists()
    ]
    assert not missing, "tests/README.md's map names what is not in the tree:\n" + "\n".join(missing)


def test_tests_readme_map_lists_every_test_file() -> None:
    listed = {path for _, tests in _tests_map() for path in tests}
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")}
    assert not files - listed, "test files missing from tests/README.md's map:\n" + "\n".join(sorted(files - listed))


def test_tests_readme_map_covers_every_source_module() -> None:
    rows = [source.rstrip("/") for sources, _ in _tests_map() for source in sources]
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "src").rglob("*.py"))
    uncovered = [m for m in modules if not any(m == row or m.startswith(row + "/") for row in rows)]
    assert not uncovered, "source modules in no row of tests/README.md's map:\n" + "\n".join(uncovered)
