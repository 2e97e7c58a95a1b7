"""docs/manifest.md and docs/cli.md are generated; this fails when a model field or a command's help changed
without `python scripts/gen_docs.py` being run (and shows the diff)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "scripts" / "gen_docs.py"


def check(code: str = "", docs_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run the generator's --check in a fresh interpreter, after `code` (which may tamper with the models/app)."""
    argv = ["--check", *(["--docs-dir", str(docs_dir)] if docs_dir else [])]
    script = (
        f"import runpy, sys\nsys.path.insert(0, {str(ROOT / 'src')!r})\n{code}\n"
        f"gen = runpy.run_path({str(GEN)!r})\nsys.exit(gen['main']({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_generated_docs_are_fresh() -> None:
    result = check()
    assert result.returncode == 0, f"docs are stale; run `python scripts/gen_docs.py`:\n{result.stdout}{result.stderr}"


def test_a_changed_model_field_makes_docs_stale() -> None:
    tamper = (
        "from swiftdeploy.manifest import model\n"
        "model.NginxConfig.model_fields['port'].description = 'A CHANGED DESCRIPTION.'\n"
        "model.NginxConfig.model_rebuild(force=True)\nmodel.Manifest.model_rebuild(force=True)\n"
    )
    result = check(tamper)
    assert result.returncode == 1
    added = [line for line in result.stdout.splitlines() if line.startswith("+| `nginx.port`")]
    assert len(added) == 1 and "A CHANGED DESCRIPTION." in added[0]
    assert "manifest.md" in result.stderr


def test_a_changed_command_help_makes_docs_stale() -> None:
    tamper = (
        "from swiftdeploy.cli.app import app\n"
        "[c for c in app.registered_commands if c.callback.__name__ == 'schema'][0].callback.__doc__ = 'NEW HELP.'\n"
    )
    result = check(tamper)
    assert result.returncode == 1
    assert "+  NEW HELP." in result.stdout
    assert "cli.md" in result.stderr


def test_check_reports_an_edited_file(tmp_path: Path) -> None:
    for name in ("manifest.md", "cli.md"):
        shutil.copy(ROOT / "docs" / name, tmp_path / name)
    (tmp_path / "cli.md").write_text((tmp_path / "cli.md").read_text() + "hand edit\n")
    result = check(docs_dir=tmp_path)
    assert result.returncode == 1
    assert "-hand edit" in result.stdout


def test_generation_is_deterministic(tmp_path: Path) -> None:
    env_a = {"COLUMNS": "40", "TERM": "xterm-256color"}
    env_b = {"COLUMNS": "250", "NO_COLOR": "1"}
    outputs = []
    for i, extra in enumerate((env_a, env_b)):
        out = tmp_path / str(i)
        out.mkdir()
        done = subprocess.run(
            [sys.executable, str(GEN), "--docs-dir", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", **extra},
        )
        assert done.returncode == 0, done.stderr
        outputs.append({p.name: p.read_text() for p in out.iterdir()})
    assert outputs[0] == outputs[1]
