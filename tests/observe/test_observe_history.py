"""history.jsonl: concurrent appends, torn lines, kill -9 of writers, streaming reader."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import stop_process

from swiftdeploy import history
from swiftdeploy.errors import InvalidInput

WRITERS = 8
APPENDS = 500


def _writer(path: str, worker: int) -> None:
    # Every other record is larger than a stdio buffer (8 KiB), which a buffered, unlocked writer would split
    # into several write() calls that interleave with the other processes' lines.
    small, large = "x" * (200 + worker * 37), str(worker) * (9000 + worker * 500)
    for i in range(APPENDS):
        history.append(path, "status", worker=worker, seq=i, filler=large if i % 2 == 0 else small)


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.jsonl"  # parent folder created by append
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per writer: real separate processes
    procs = [ctx.Process(target=_writer, args=(str(path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    raw_lines = path.read_bytes().split(b"\n")
    assert raw_lines[-1] == b""  # the file ends with a newline
    parsed = [json.loads(line) for line in raw_lines[:-1]]  # every physical line is valid JSON on its own
    assert len(parsed) == WRITERS * APPENDS
    reader = history.read(path)
    records = list(reader)
    assert len(records) == WRITERS * APPENDS and reader.skipped == 0
    for w in range(WRITERS):  # each writer's records arrive complete and in its own order
        seqs = [r["seq"] for r in records if r["worker"] == w]
        assert seqs == list(range(APPENDS))


def test_record_shape_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    rec = history.append(
        path, "chaos", track="canary", note="line1\nline2 | é", rate=float("nan"), when=datetime(2024, 1, 1)
    )
    assert rec["event"] == "chaos" and rec["ts"].endswith("Z")
    assert datetime.fromisoformat(rec["ts"]).tzinfo is not None
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")  # the newline inside a field is escaped
    assert "é".encode() in data  # ensure_ascii=False
    (back,) = list(history.read(path))
    assert back["note"] == "line1\nline2 | é" and back["rate"] is None and back["when"] == "2024-01-01 00:00:00"
    with pytest.raises(TypeError):
        history.append(path, "init", ts="2024-01-01T00:00:00Z")


def test_torn_last_line_is_not_glued_to_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    history.append(path, "init")
    with open(path, "ab") as f:
        f.write(b'{"ts": "2024-01-01T00:00:00.000Z", "event": "depl')  # a crash mid-write
    history.append(path, "deploy_started")
    reader = history.read(path)
    assert [r["event"] for r in reader] == ["init", "deploy_started"]
    assert reader.skipped == 1


def test_reader_skips_and_counts_invalid_lines(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    lines = [
        b'{"ts": "2024-01-01T00:00:00.000Z", "event": "init"}',
        b"not json",
        b"[1, 2]",  # not an object
        b'{"event": "init"}',  # no ts
        b'{"ts": "2024-01-01T00:00:00Z"}',  # no event
        b'{"ts": "yesterday", "event": "init"}',  # ts not RFC 3339
        b'{"ts": "2024-01-01T00:00:00Z", "event": "init", "x": "\xff"}',  # not UTF-8
        b"",  # blank lines are not counted
        b'{"ts": "2024-01-02T00:00:00.000Z", "event": "teardown"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = history.read(path)
    assert [r["event"] for r in reader] == ["init", "teardown"]
    assert reader.skipped == 6 and reader.lines == 8
    since = history.read(path, since=datetime(2024, 1, 1, 12, tzinfo=UTC))
    assert [r["event"] for r in since] == ["teardown"] and since.filtered == 1


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    reader = history.read(tmp_path / "nope.jsonl")
    assert list(reader) == [] and reader.skipped == 0


def test_record_decision_from_dict_and_object(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    decision = {
        "domain": "canary",
        "allow": False,
        "verdict": "deny",
        "engine": "embedded",
        "violations": [{"rule": "max_error_rate", "message": "m", "observed": 5.0, "threshold": 1.0, "unit": "%"}],
        "input": {"window_seconds": 30},
    }

    class Obj:
        def to_dict(self) -> dict:
            return decision

    history.record_decision(path, decision)
    history.record_decision(path, Obj(), gate="promote_stable")
    a, b = list(history.read(path))
    for rec in (a, b):
        assert rec["event"] == "policy_decision"
        assert rec["domain"] == "canary" and rec["verdict"] == "deny" and rec["engine"] == "embedded"
        assert rec["violations"][0]["observed"] == 5.0 and rec["input"] == {"window_seconds": 30}
    assert b["gate"] == "promote_stable"


def test_parse_since() -> None:
    now = datetime(2024, 5, 2, 12, tzinfo=UTC)
    assert history.parse_since("2h", now=now) == datetime(2024, 5, 2, 10, tzinfo=UTC)
    assert history.parse_since("2024-05-01", now=now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert history.parse_since("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(InvalidInput):
        history.parse_since("last tuesday")


WRITER_LOOP = """
import sys
from swiftdeploy import history
path, tag = sys.argv[1], sys.argv[2]
print("ready", flush=True)
i = 0
while True:
    history.append(path, "status", tag=tag, seq=i, pad="y" * 3000)
    i += 1
"""


def test_kill_9_of_a_writer_never_corrupts_earlier_lines(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    for it in range(20):
        before = path.read_bytes() if path.exists() else b""
        complete = before[: before.rfind(b"\n") + 1]  # everything up to the last full line
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER_LOOP, str(path), f"w{it}"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 10
            while _size(path) <= len(before) + 20_000 and time.monotonic() < deadline:
                time.sleep(0.005)  # let it write a few records, then kill it mid-stream
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            stop_process(proc, sig=signal.SIGKILL)
        after = path.read_bytes()
        assert after.startswith(complete)  # nothing already written was touched
    reader = history.read(path)
    records = list(reader)
    assert reader.skipped <= 20  # at most the one line each killed writer was writing
    tags = {r["tag"] for r in records}
    assert tags == {f"w{i}" for i in range(20)}
    for i in range(20):  # each writer's complete records are all there, in order
        seqs = [r["seq"] for r in records if r["tag"] == f"w{i}"]
        assert seqs == list(range(len(seqs))) and seqs


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # not created yet, or renamed by a rotation since it was listed
        return 0


# --- rotation ----------------------------------------------------------------------------------------------------

ROTATING = history.Rotation(max_bytes=40_000, keep=1000)  # small files; nothing deleted, so every record is checkable


def _rotating_writer(path: str, worker: int) -> None:
    pad = "z" * (300 + worker * 97)
    for i in range(APPENDS):
        history.append(path, "status", rotation=ROTATING, worker=worker, seq=i, pad=pad)


def test_rotation_under_concurrent_writers_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rotating_writer, args=(str(path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=180)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    files = history.files(path)
    assert len(files) > 20 and files[-1] == path  # it rotated many times, under contention
    assert files[0] == history.rotated_path(path, len(files) - 1)  # oldest first, no number missing
    for f in files:  # rotated before a record would take a file past max_bytes; never a line split across files
        assert f.stat().st_size <= ROTATING.max_bytes
        assert f.read_bytes().endswith(b"\n")
    reader = history.read(path)
    records = list(reader)
    assert len(records) == WRITERS * APPENDS and reader.skipped == 0 and reader.files == files
    for w in range(WRITERS):  # read oldest first across the files: each writer's records complete and in order
        assert [r["seq"] for r in records if r["worker"] == w] == list(range(APPENDS))


def test_rotation_keeps_at_most_keep_files_and_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    small = history.Rotation(max_bytes=1000, keep=3)
    for i in range(40):
        history.append(path, "status", rotation=small, seq=i, pad="p" * 200)
    assert [f.name for f in history.files(path)] == [
        "history.3.jsonl", "history.2.jsonl", "history.1.jsonl", "history.jsonl"
    ]  # fmt: skip
    seqs = [r["seq"] for r in history.read(path)]
    assert seqs == list(range(seqs[0], 40)) and seqs[0] > 0  # the newest records, contiguous; the oldest dropped
    current = [r["seq"] for r in history.read(path, rotated=False)]  # the current file alone: the newest ones
    assert current and current == seqs[-len(current) :]
    # a record larger than max_bytes still goes in (alone in its file), never lost
    history.append(path, "status", rotation=small, seq=40, pad="q" * 5000)
    assert list(history.read(path, rotated=False))[-1]["seq"] == 40


def test_a_crash_mid_rotation_leaves_the_files_in_order_and_the_next_rotation_carries_on(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    rotation = history.Rotation(max_bytes=300, keep=3)

    def write(name: str, seqs: range) -> None:
        (tmp_path / name).write_text("".join(json.dumps({"ts": f"2024-05-01T12:00:{s:02d}.000Z", "event": "status",
                                                          "seq": s}) + "\n" for s in seqs))  # fmt: skip

    # killed after renaming .2 to .3 but before .1 to .2: a number is missing, the order still holds
    write("history.3.jsonl", range(0, 3))
    write("history.1.jsonl", range(3, 6))
    write("history.jsonl", range(6, 9))
    assert [r["seq"] for r in history.read(path)] == list(range(9))
    history.append(path, "status", rotation=rotation, seq=9, pad="x" * 200)  # rotates; .3 would be a 4th: dropped
    assert [f.name for f in history.files(path)] == ["history.2.jsonl", "history.1.jsonl", "history.jsonl"]
    assert [r["seq"] for r in history.read(path)] == list(range(3, 10))
    # killed after shifting .2 -> .3 and .1 -> .2, before renaming the current file to .1
    history.rotated_path(path, 2).rename(history.rotated_path(path, 3))
    history.rotated_path(path, 1).rename(history.rotated_path(path, 2))
    assert [r["seq"] for r in history.read(path)] == list(range(3, 10))
    history.append(path, "status", rotation=rotation, seq=10, pad="x" * 200)  # carries on from there
    assert [f.name for f in history.files(path)] == ["history.3.jsonl", "history.1.jsonl", "history.jsonl"]
    assert [r["seq"] for r in history.read(path)] == list(range(6, 11))


def test_a_reader_reads_each_record_once_while_the_file_rotates_under_it(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    for i in range(10):
        history.append(path, "status", seq=i)
    records = history.read(path)
    iterator = iter(records)
    assert next(iterator)["seq"] == 0  # the files are open now
    tiny = history.Rotation(max_bytes=1, keep=5)
    for i in range(10, 13):
        history.append(path, "status", rotation=tiny, seq=i)  # every append rotates
    assert [r["seq"] for r in iterator] == list(range(1, 10))  # the set opened at the start, once each
    assert [r["seq"] for r in history.read(path)] == list(range(13))  # a new read sees every file


WRITER_ROTATING = """
import sys
from swiftdeploy import history
path, tag = sys.argv[1], sys.argv[2]
rotation = history.Rotation(max_bytes=20_000, keep=10_000)
print("ready", flush=True)
i = 0
while True:
    history.append(path, "status", rotation=rotation, tag=tag, seq=i, pad="y" * 3000)
    i += 1
"""


def test_kill_9_during_rotations_loses_at_most_the_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    for it in range(15):
        before = sum(_size(f) for f in history.files(path))
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER_ROTATING, str(path), f"w{it}"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 10
            while sum(_size(f) for f in history.files(path)) <= before + 50_000 and time.monotonic() < deadline:
                time.sleep(0.003)  # a few rotations' worth, then kill it wherever it is (maybe mid-rename)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            stop_process(proc, sig=signal.SIGKILL)
    reader = history.read(path)
    records = list(reader)
    assert reader.skipped <= 15 and len(reader.files) > 15
    for it in range(15):  # each writer's complete records: all there, once, in order, across the files
        seqs = [r["seq"] for r in records if r["tag"] == f"w{it}"]
        assert seqs and seqs == list(range(len(seqs)))
    assert [r["tag"] for r in records] == sorted((r["tag"] for r in records), key=lambda t: int(t[1:]))
