"""cli/output.py: one console pair per command run, the error line on a real terminal with and without NO_COLOR,
a blocked gate that prints every violation once, and `--help` without a type on plain flags."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from swiftdeploy.cli import output, run

SWIFTDEPLOY = Path(sys.executable).parent / "swiftdeploy"


def test_one_console_pair_per_command_run() -> None:
    assert output.out() is output.out() and output.err() is output.err()
    assert output.out() is not output.err()
    before = output.out()
    assert run(["schema"]) == 0
    assert output.out() is not before  # run() started a new pair: terminal and NO_COLOR are read per run


def _stderr_on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """Run the console script with stderr on a pseudo-terminal; return what the terminal received (one short
    error line: it fits the terminal's buffer, so it is read once the process has exited)."""
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [str(SWIFTDEPLOY), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        return os.read(master, 65536).decode(errors="replace")
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.skipif(not SWIFTDEPLOY.exists(), reason="console script not installed")
def test_error_line_is_red_on_a_terminal_and_plain_with_no_color(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="200")
    coloured = _stderr_on_a_terminal(["-m", missing, "init"], env)
    assert "\x1b[" in coloured and "error:" in coloured and "nowhere.yaml" in coloured
    plain = _stderr_on_a_terminal(["-m", missing, "init"], {**env, "NO_COLOR": "1"})
    assert "\x1b[" not in plain
    assert plain.replace("\r\n", "\n").startswith("error: ") and "nowhere.yaml" in plain


def test_a_blocked_gate_prints_every_violation_once(manifests, capsys) -> None:
    from swiftdeploy import history

    path = manifests.write(
        "services: {image: demo:1, port: 3000}\nruntime: local\n"
        "policy:\n  engine: embedded\n"
        "  thresholds: {min_disk_free_gb: 1000000, max_memory_used_percent: 0.001, max_cpu_load: 1000}\n"
    )
    assert run(["-m", str(path), "deploy"]) == 3
    err = capsys.readouterr().err
    records = list(history.read(path.parent / "history.jsonl"))
    (decision,) = [r for r in records if r["event"] == "policy_decision"]
    violations = decision["violations"]
    assert {v["rule"] for v in violations} == {"disk_free", "memory_used"}, violations
    for v in violations:
        assert err.count(v["message"]) == 1, (v["message"], err)
        assert err.count(f"{v['rule']}: ") == 1, (v["rule"], err)
    assert "infrastructure: deny (embedded engine)" in err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert error_lines == ["error: infrastructure policy answered deny (embedded engine): 2 violations shown above"]
    assert records[-1]["event"] == "deploy_blocked"


def test_help_shows_no_type_on_plain_flags(capsys) -> None:
    for argv in (["--help"], ["deploy", "--help"], ["status", "--help"], ["policy", "eval", "--help"]):
        assert run(argv) == 0
        text = capsys.readouterr().out
        assert "<bool>" not in text and "--help" in text, argv
    assert run(["deploy", "--help"]) == 0
    assert "--timeout <float range>" in capsys.readouterr().out  # options that take a value still say which


def test_help_and_command_modules_load_no_rich() -> None:
    """Command modules import only Typer and the stdlib at top level; `--help` is Click's plain formatter."""
    import json

    code = (
        "import json, sys\nfrom swiftdeploy.cli import run\nrc = run(['--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'httpx', 'pydantic', 'regorus', 'psutil'})\n"
        "print(json.dumps([rc, heavy]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [0, []]
