"""`swiftdeploy policy eval --input` is bounded (issue 14 item 5): a FIFO or /dev/zero is refused at once (no
hang, no memory eaten), a file or stdin over the size cap is refused after reading at most cap + 1 bytes, and
JSON nested 100 000 deep, 1e400, NaN or bytes that are not UTF-8 are bad input: exit 2, one line, no traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest_io import run_cli

from swiftdeploy.cli.policy import MAX_INPUT

DEADLINE = 30  # a hang detector: each case takes about a second (the CLI's start)
DEEP = "[" * 100_000 + "]" * 100_000


def cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (--input path, words the error line must hold)."""
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)  # nobody ever writes it: opening it for reading blocks without O_NONBLOCK
    files = {
        "deep.json": DEEP,
        "inf.json": '{"cpu_load": 1e400}',
        "nan.json": '{"cpu_load": NaN}',
        "big.json": " " * (MAX_INPUT + 1),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes(b'{"name": "\xe9"}')
    return {
        "a FIFO": (str(fifo), "not a regular file"),
        "/dev/zero": ("/dev/zero", "not a regular file"),
        "a folder": (str(tmp_path), "is a folder"),
        "deeply nested JSON": (str(tmp_path / "deep.json"), "nested deeper than"),
        "1e400": (str(tmp_path / "inf.json"), "1e400 is out of range"),
        "NaN": (str(tmp_path / "nan.json"), "NaN is not JSON"),
        "over the size cap": (str(tmp_path / "big.json"), f"more than the limit of {MAX_INPUT}"),
        "not UTF-8": (str(tmp_path / "latin1.json"), "not UTF-8"),
    }


CASES = ["a FIFO", "/dev/zero", "a folder", "deeply nested JSON", "1e400", "NaN", "over the size cap", "not UTF-8"]


def assert_bad_input(run, words: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr and "this is a bug" not in run.stderr
    assert len(run.error_lines) == 1 and run.error_lines[0].startswith("error: "), run.stderr
    assert words in run.stderr, run.stderr


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_file_is_exit_2_at_once(tmp_path: Path, case: str) -> None:
    path, words = cases(tmp_path)[case]
    run = run_cli(
        "policy", "eval", "infrastructure", "--input", path, timeout=DEADLINE, address_space_mb=400, cwd=tmp_path
    )
    assert_bad_input(run, words)


@pytest.mark.parametrize(
    ("source", "words"),
    [("/dev/zero", f"more than {MAX_INPUT} bytes"), ("deep.json", "nested deeper than")],
)
def test_stdin_is_bounded_too(tmp_path: Path, source: str, words: str) -> None:
    (tmp_path / "deep.json").write_text(DEEP, encoding="utf-8")
    with open(source if source.startswith("/") else tmp_path / source, "rb") as stdin:
        run = run_cli(
            "policy", "eval", "infrastructure", "--input", "-", stdin=stdin.fileno(), timeout=DEADLINE,
            address_space_mb=400, cwd=tmp_path,
        )  # fmt: skip
    assert_bad_input(run, words)


def test_a_good_input_still_decides(tmp_path: Path) -> None:
    good = tmp_path / "input.json"
    good.write_text('{"disk_free_gb": 100, "cpu_load": 0.1, "cpu_count": 4, "memory_used_percent": 10}')
    run = run_cli("policy", "eval", "infrastructure", "--input", str(good), "--json", timeout=DEADLINE, cwd=tmp_path)
    assert run.returncode in (0, 3), run.stderr  # a decision either way
    assert '"verdict"' in run.stdout


def test_subprocess_stdin_devnull_is_empty_json_error(tmp_path: Path) -> None:
    run = run_cli(
        "policy", "eval", "infrastructure", "--input", "-", stdin=subprocess.DEVNULL, timeout=DEADLINE, cwd=tmp_path
    )
    assert_bad_input(run, "invalid JSON")
