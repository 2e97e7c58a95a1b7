"""Readers never fail on a bad history line (issue 14 item 6): each line of the corpus below, between two good
records, is skipped and counted by every reader - `audit` (the report and its one-line summary), `history` (a
warning line; `--json` counts it), and `status --once` writes its record after it and still exits as it would
without it - with bounded memory: a line longer than history.MAX_LINE is dropped without being held (the 50 MB
case runs under RLIMIT_AS; the 1 GB one with SWIFTDEPLOY_LONG_FAULTS=1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest_io import child_peak_rss_mb, run_cli

from swiftdeploy import audit, history

GOOD = [
    {"ts": "2026-01-01T00:00:00.000Z", "event": "deploy_started", "mode": "stable"},
    {"ts": "2026-01-01T00:00:05.000Z", "event": "deploy_succeeded", "mode": "stable"},
]


def status_line(interval: str) -> bytes:
    return (
        b'{"ts": "2026-01-01T00:00:03.000Z", "event": "status", "tracks": {"canary": {"state": "up", '
        b'"interval": ' + interval.encode() + b"}}}"
    )


# one bad line each; every one of them made `audit` (and most `history`) exit 1 before
CORPUS: dict[str, bytes] = {
    "year 1 at +14:00": b'{"ts": "0001-01-01T00:00:00+14:00", "event": "deploy_started"}',
    "year 9999 at -14:00": b'{"ts": "9999-12-31T23:59:59-14:00", "event": "deploy_started"}',
    "deeply nested": b'{"ts": "2026-01-01T00:00:01.000Z", "event": "chaos", "x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    "lone surrogate": b'{"ts": "2026-01-01T00:00:02.000Z", "event": "chaos", "mode": "\\ud800"}',
    "1e400 in a status record": status_line('{"p99_ms": 1e400, "seconds": 5}'),
    "a 5000-digit integer in a status record": status_line('{"error_rate_percent": ' + "9" * 5000 + "}"),
    "a 4000-digit integer in a violation": b'{"ts": "2026-01-01T00:00:03.000Z", "event": "policy_decision", '
    b'"domain": "canary", "violations": [{"rule": "x", "observed": ' + b"9" * 4000 + b', "threshold": 1}]}',
    "NaN": b'{"ts": "2026-01-01T00:00:03.000Z", "event": "chaos", "rate": NaN}',
    "not UTF-8": b'{"ts": "2026-01-01T00:00:03.000Z", "event": "chaos", "mode": "\xff\xfe"}',
    "ts not a string": b'{"ts": 1767225600, "event": "chaos"}',
    "over-long valid record (2 MiB)": b'{"ts": "2026-01-01T00:00:03.000Z", "event": "chaos", "pad": "'
    + b"x" * (2 << 20)
    + b'"}',
}


# valid records with absurd figures: kept (they are records), their figures left out where they are used
ODD: dict[str, bytes] = {
    "huge float in a status record": status_line('{"p99_ms": 1.7e308, "seconds": 5}'),
    "negative huge float in a status record": status_line('{"error_rate_percent": -1.7e308, "seconds": 1e300}'),
    "a 60-digit integer in a status record": status_line('{"p99_ms": ' + "9" * 60 + ', "seconds": 5}'),
    "huge figures in a violation": b'{"ts": "2026-01-01T00:00:03.000Z", "event": "policy_decision", '
    b'"domain": "canary", "violations": [{"rule": "x", "observed": 1.7e308, "threshold": -1.7e308}]}',
}


def write_history(folder: Path, bad: bytes | None) -> Path:
    lines = [json.dumps(GOOD[0]).encode()] + ([bad] if bad is not None else []) + [json.dumps(GOOD[1]).encode()]
    path = folder / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def manifest(folder: Path) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(
        "services: {image: swift-deploy-1-node:latest, port: 3000}\n"
        "nginx: {image: nginx:latest, port: 8080}\n"
        "runtime: local\npolicy: {engine: embedded}\n",
        encoding="utf-8",
    )
    return path


def assert_clean(run) -> None:
    assert "Traceback" not in run.stderr and "this is a bug" not in run.stderr, run.stderr


@pytest.mark.parametrize("case", list(CORPUS))
def test_the_reader_skips_and_counts(tmp_path: Path, case: str) -> None:
    reader = history.read(write_history(tmp_path, CORPUS[case]))
    assert [r["event"] for r in reader] == ["deploy_started", "deploy_succeeded"]
    assert reader.skipped == 1 and reader.lines == 3


@pytest.mark.parametrize("case", list(CORPUS))
def test_audit_skips_and_counts(tmp_path: Path, case: str) -> None:
    write_history(tmp_path, CORPUS[case])
    out, report = audit.write(tmp_path / "history.jsonl", tmp_path / "audit_report.md")
    assert (report.records, report.skipped) == (2, 1)
    assert "| Skipped lines | 1 " in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", list(ODD))
def test_audit_keeps_a_record_with_absurd_figures(tmp_path: Path, case: str) -> None:
    write_history(tmp_path, ODD[case])
    out, report = audit.write(tmp_path / "history.jsonl", tmp_path / "audit_report.md")
    assert (report.records, report.skipped) == (3, 0)
    assert "| Skipped lines | 0 " in out.read_text(encoding="utf-8")


def write_corpus(folder: Path) -> Path:
    """Every bad line of the corpus, each between good records."""
    path = folder / "history.jsonl"
    good = [json.dumps(record).encode() for record in GOOD]
    path.write_bytes(b"\n".join(line for bad in CORPUS.values() for line in (good[0], bad)) + b"\n" + good[1] + b"\n")
    return path


def test_the_cli_readers_skip_the_corpus_and_say_so(tmp_path: Path) -> None:
    """audit: exit 0 and "N unreadable lines skipped"; history: a warning line; history --json: the count."""
    write_corpus(tmp_path)
    m = manifest(tmp_path)
    expected = len(CORPUS) + 1
    run = run_cli("-m", str(m), "audit")
    assert_clean(run)
    assert run.returncode == 0, run.stderr
    assert f"{expected} records" in run.stdout and f"{len(CORPUS)} unreadable lines skipped" in run.stdout
    run = run_cli("-m", str(m), "history")
    assert_clean(run)
    assert run.returncode == 0 and "deploy_succeeded" in run.stdout, run.stderr
    assert f"warning: {len(CORPUS)} invalid line(s)" in run.stderr
    run = run_cli("-m", str(m), "history", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["skipped"] == len(CORPUS) and len(data["records"]) == expected


def test_status_once_appends_after_a_bad_line(tmp_path: Path) -> None:
    """`status --once` on a stack that is not running: exit 1 (an outage) with or without the bad lines, its
    record appended after them, and the readers still count them."""
    history_path = tmp_path / "history.jsonl"
    history_path.write_bytes(b"\n".join(CORPUS.values()) + b"\n")
    run = run_cli("-m", str(manifest(tmp_path)), "status", "--once", "--interval", "0.1")
    assert_clean(run)
    assert run.returncode == 1, (run.stdout, run.stderr)
    reader = history.read(history_path)
    assert [r["event"] for r in reader] == ["status"] and reader.skipped == len(CORPUS)


# --- a line too long to hold: memory stays bounded ---

BIG_MB = 1024 if os.environ.get("SWIFTDEPLOY_LONG_FAULTS") == "1" else 50
ADDRESS_SPACE_MB = 160  # the CLI runs audit in ~60 MB of address space; holding a 50 MB line takes 150 MB more


def write_big_line_history(folder: Path, megabytes: int) -> Path:
    """A valid record with a `pad` field of `megabytes` MB between the two good ones, written in 1 MiB chunks."""
    path = folder / "history.jsonl"
    with open(path, "wb") as out:
        out.write(json.dumps(GOOD[0]).encode() + b"\n")
        out.write(b'{"ts": "2026-01-01T00:00:03.000Z", "event": "chaos", "pad": "')
        chunk = b"x" * (1 << 20)
        for _ in range(megabytes):
            out.write(chunk)
        out.write(b'"}\n' + json.dumps(GOOD[1]).encode() + b"\n")
    return path


@pytest.mark.parametrize("command", [["audit"], ["history"], ["history", "--json"]])
def test_a_huge_line_is_skipped_in_bounded_memory(tmp_path: Path, command: list[str]) -> None:
    write_big_line_history(tmp_path, BIG_MB)
    run = run_cli("-m", str(manifest(tmp_path)), *command, address_space_mb=ADDRESS_SPACE_MB, timeout=600)
    assert_clean(run)
    assert run.returncode == 0, run.stderr
    if command == ["audit"]:
        assert "2 records" in run.stdout and "1 unreadable lines skipped" in run.stdout
    elif command == ["history"]:
        assert "deploy_succeeded" in run.stdout and "1 invalid line(s)" in run.stderr
    else:
        assert json.loads(run.stdout)["skipped"] == 1


@pytest.mark.skipif(os.environ.get("SWIFTDEPLOY_LONG_FAULTS") != "1", reason="SWIFTDEPLOY_LONG_FAULTS=1: 1 GB line")
def test_peak_memory_of_audit_on_a_1_gb_line(tmp_path: Path) -> None:
    """The figure for the report: audit's peak RSS on a 1 GB line (a reader holding it peaked at 2.1 GB)."""
    write_big_line_history(tmp_path, 1024)
    code, peak_mb = child_peak_rss_mb("-m", str(manifest(tmp_path)), "audit")
    print(f"audit on a 1 GB line: exit {code}, peak RSS {peak_mb:.0f} MB")
    assert code == 0 and peak_mb < 200
