"""cli/output.py: one console pair per command run, the error line on a real terminal with and without NO_COLOR,
a blocked gate and a validate failure that print every violation/problem once, `--help` without a type on plain
flags, no wrapping off a terminal, shell completion, and `-m` accepted after the command."""

from __future__ import annotations

import json
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
    commands = (["--help"], ["deploy", "--help"], ["status", "--help"], ["policy", "eval", "--help"],
                ["ps", "--help"], ["logs", "--help"], ["history", "--help"], ["lock", "release", "--help"],
                ["promote", "stable", "--help"], ["chaos", "recover", "--help"])  # fmt: skip
    for argv in commands:
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


def _piped(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script with stdout and stderr on pipes, as in CI or `make demo > log`: no COLUMNS, no TTY."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    return subprocess.run([str(SWIFTDEPLOY), *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.mark.skipif(not SWIFTDEPLOY.exists(), reason="console script not installed")
def test_output_off_a_terminal_is_not_wrapped(manifests) -> None:
    path = manifests.write("services: {image: demo:1, port: 3000}\nruntime: local\npolicy: {engine: embedded}\n")
    (path.parent / "docker-compose.yml").write_text("stale\n")  # one file drifted, the rest missing: a long detail
    done = _piped(["validate"], path.parent)
    assert done.returncode == 1, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if "generated files fresh" in line]
    assert "docker-compose.yml (differs)" in row, done.stdout
    for name in ("nginx.conf", "policy-bundle/data.json", "policy-bundle/infrastructure.rego"):
        assert f"{name} (missing)" in row, done.stdout  # every cell on its one line, none folded at 80 columns
    assert "run `swiftdeploy init` (see the diff with `swiftdeploy init --dry-run`)" in row
    assert len(row) > 120
    (error,) = done.stderr.splitlines()
    assert error == "error: 1 check failed: generated files fresh (see the fix column)"


def test_long_text_is_one_line_off_a_terminal(capsys, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    output.reset()
    sentence = "a sentence well past eighty columns, " * 6
    output.out().print(sentence.strip())
    output.warning(sentence.strip())
    captured = capsys.readouterr()
    assert captured.out == sentence.strip() + "\n"
    assert captured.err == "warning: " + sentence.strip() + "\n"


def test_a_validate_failure_prints_each_problem_once(manifests, capsys) -> None:
    path = manifests.write("services: {image: demo:1, port: 3000, nme: x, prot: 1}\nruntime: local\n")
    assert run(["-m", str(path), "validate"]) == 2
    captured = capsys.readouterr()
    both = captured.out + captured.err
    for problem in ("services.nme: unknown field", "services.prot: unknown field"):
        assert both.count(problem) == 1, both
    assert captured.err.startswith("error: ") and "shown above" in captured.err
    # --json: the problems are in the JSON on stdout, and the error line on stderr names them too
    assert run(["-m", str(path), "validate", "--json"]) == 2
    captured = capsys.readouterr()
    assert "services.nme: unknown field" in captured.err and "services.nme" in captured.out


@pytest.mark.skipif(not SWIFTDEPLOY.exists(), reason="console script not installed")
def test_shell_completion(tmp_path) -> None:
    script = _piped(["--show-completion", "bash"], tmp_path)
    assert script.returncode == 0 and "_SWIFTDEPLOY_COMPLETE=complete_bash" in script.stdout, script.stderr

    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_SWIFTDEPLOY_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        done = subprocess.run([str(SWIFTDEPLOY)], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("swiftdeploy pr", 1) == ["promote"]
    assert complete("swiftdeploy lock ", 2) == ["status", "release"]
    assert "--manifest" in complete("swiftdeploy deploy --", 2)  # -m after the command completes too
    assert "--install-completion" in _piped(["--help"], tmp_path).stdout


def test_manifest_option_after_the_command_is_the_same_option(manifests, capsys) -> None:
    path = manifests.write("services: {image: demo:1, port: 3000}\nruntime: local\n")
    assert run(["schema", "-m", str(path)]) == 0
    capsys.readouterr()
    for argv in (["history", "-m", str(path), "--json"], ["-m", str(path), "history", "--json"],
                 ["-m", "/nowhere.yaml", "history", "--manifest", str(path), "--json"]):  # fmt: skip
        assert run(argv) == 0, argv
        assert json.loads(capsys.readouterr().out)["history"] == str(path.parent / "history.jsonl")
    assert run(["history", "-m", str(path.parent / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    # one definition: every command's --help shows the root's flags and text
    assert run(["promote", "canary", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "-m, --manifest <path> Path of manifest.yaml (before or after the command)." in shown
