"""audit: golden report on a fixed history, parsed as Markdown; skipped lines; escaping; bounded tables; CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from swiftdeploy import audit, history
from swiftdeploy.cli import run

GOLDEN = Path(__file__).parent / "golden"
GENERATED_AT = "2024-05-01T13:00:00.000Z"
MANIFEST = "services: {image: swift-deploy-1-node:latest, port: 3000}\nnginx: {image: nginx:latest, port: 8080}\n"


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Section heading -> rows of the first table under it (header row first), via markdown-it's GFM tables."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    tables: dict[str, list[list[str]]] = {}
    heading, rows, row, in_table = None, [], None, False
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h2":
            heading = tokens[i + 1].content
        elif tok.type == "table_open":
            in_table, rows = True, []
        elif tok.type == "table_close":
            in_table = False
            tables.setdefault(heading, rows)
        elif in_table and tok.type == "tr_open":
            row = []
            rows.append(row)
        elif in_table and tok.type == "inline":
            row.append(tok.content)
    return tables


def _fences(markdown: str) -> list[tuple[str, str]]:
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [(t.info.strip(), t.content) for t in tokens if t.type == "fence"]


def _chart(block: str) -> dict:
    """A text chart of the report parsed back from its characters: the value rows (label, cells), the time ticks
    (column, label), the span it covers and the legend."""
    lines = block.splitlines()
    rows = [(ln.split("|", 1)[0].strip(), ln.split("|", 1)[1]) for ln in lines[1:] if re.match(r"^ *[\d.,]* \|", ln)]
    axis = next(ln for ln in lines if re.match(r"^ *\+[-+]+$", ln))
    start = axis.index("+") + 1
    labels_line = lines[lines.index(axis) + 1]
    span = re.search(r"UTC, (\S+) to (\S+)", block)
    return {
        "title": lines[0],
        "rows": rows,
        "columns": len(axis) - start,
        "ticks": [(m.start() - start, m.group()) for m in re.finditer(r"\d\d:\d\d(:\d\d)?", labels_line)],
        "tick_columns": [i for i, c in enumerate(axis[start:]) if c == "+"],
        "origin": history.parse_ts(span[1]),
        "end": history.parse_ts(span[2]),
        "legend": next(ln for ln in lines if ln.startswith("legend:")),
    }


def _column_time(chart: dict, column: int) -> tuple:
    """The time span one column of a chart stands for."""
    width = (chart["end"] - chart["origin"]) / chart["columns"]
    return chart["origin"] + column * width, chart["origin"] + (column + 1) * width


def _glyph_columns(chart: dict, glyph: str) -> set[int]:
    return {i for _, cells in chart["rows"] for i, c in enumerate(cells) if c in (glyph, "*")}


def test_golden_report() -> None:
    report = audit.build(GOLDEN / "history.jsonl")
    text = audit.render_markdown(report, generated_at=GENERATED_AT)
    golden = GOLDEN / "audit_report.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), "the report changed; if intended, rerun with UPDATE_GOLDEN=1"


def test_report_parses_as_gfm_with_expected_tables_and_charts() -> None:
    text = (GOLDEN / "audit_report.md").read_text(encoding="utf-8")
    tables = _tables(text)
    assert set(tables) == {"Summary", "Timeline", "Mode changes", "Chaos episodes", "Policy violations"}
    summary = {row[0]: row[1] for row in tables["Summary"][1:]}
    assert summary["Deploys"].startswith("1 started: 1 succeeded")
    assert summary["Blocks by policy"].startswith("1 (0 deploy, 1 promote)")
    assert summary["Chaos episodes"] == "2" and summary["Rollbacks"] == "1"
    assert summary["Skipped lines"].startswith("0")
    assert "embedded" in summary["Policy engines"]
    timeline = tables["Timeline"]
    assert timeline[0] == ["Time", "Event", "Details"]
    assert [r[1] for r in timeline[1:]].count("status") == 0 and len(timeline) == 1 + 15
    assert [r[2:4] for r in tables["Mode changes"][1:]] == [["", "stable"], ["stable", "canary"], ["canary", "stable"]]
    chaos = tables["Chaos episodes"][1:]
    assert [(r[1], r[4], r[5]) for r in chaos] == [
        ("error 50%", "50 s", "replaced by slow"),
        ("slow 1.5s", "15 s", "recover"),
    ]
    violations = tables["Policy violations"]
    assert violations[0][6:8] == ["Worst observed", "Threshold"]
    gate = [r for r in violations[1:] if r[2] == "gate"]
    assert gate == [
        [
            "canary",
            "max_error_rate_percent",
            "gate",
            "1",
            "2024-05-01T12:01:11.000Z",
            "2024-05-01T12:01:11.000Z",
            "52.4%",
            "1%",
            "canary error rate 52.4% &gt; 1%<br>over the 30 s window",  # newline kept inside the cell
        ]
    ]
    # the `|` in a message is escaped: the row still has exactly 9 cells and the text survives
    status_row = next(r for r in violations[1:] if r[2] == "status" and r[1] == "max_error_rate_percent")
    assert len(status_row) == 9 and status_row[8] == "canary error rate 50% &gt; 1% | over 30 s"
    assert all(len(r) == len(t[0]) for t in tables.values() for r in t)
    fences = _fences(text)
    assert [info for info, _ in fences] == ["text", "text", "text"]  # P99, error rate, one promotion window
    p99, err = _chart(fences[0][1]), _chart(fences[1][1])
    assert p99["title"].startswith("P99 latency (ms)") and err["title"].startswith("Error rate (%)")
    assert "o stable (max 14 ms)" in p99["legend"] and "x canary (max 23 ms)" in p99["legend"]
    # the canary answered only from 12:00:30 (its first record covers the 2 s before 12:00:32): a gap, not zeros
    canary = _glyph_columns(err, "x")
    assert canary and all(_column_time(err, i)[1] > history.parse_ts("2024-05-01T12:00:30Z") for i in canary)
    window = fences[2][1]
    assert "promote stable: deny (embedded engine), 30 s window" in window
    assert "63 (33 errors)" in window and "52.4%   | threshold 1%" in window


def test_truncated_last_line_and_garbage_line_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    text = (GOLDEN / "history.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    text.insert(5, "garbage {not json\n")
    path.write_text("".join(text) + '{"ts": "2024-05-01T12:02:00.000Z", "event": "depl', encoding="utf-8")
    report = audit.build(path)
    assert report.skipped == 2 and report.records == 22
    md = audit.render_markdown(report)
    summary = {row[0]: row[1] for row in _tables(md)["Summary"][1:]}
    assert summary["Skipped lines"].startswith("2 ")


def test_cells_escape_pipes_newlines_and_html() -> None:
    assert audit.cell("a|b\nc\r\nd <b>") == "a\\|b<br>c<br>d &lt;b&gt;"
    assert audit.cell(None) == "" and audit.cell(1.5) == "1.5" and audit.cell(2.0) == "2"
    md = "\n".join(audit._table(["A", "B"], [["x|y", "1\n2"]]))
    rows = _tables("## T\n\n" + md)["T"]
    assert rows == [["A", "B"], ["x|y", "1<br>2"]]  # one cell: the parser unescaped the pipe


def test_tables_and_chart_stay_bounded(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(3000):
            ts = f"2024-05-01T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
            if i % 10 == 0:
                rec = {"ts": ts, "event": "chaos", "track": "canary", "mode": "error" if i % 20 == 0 else "recover"}
            elif i % 7 == 0:
                rec = {"ts": ts, "event": "rollback", "mode_from": "canary", "mode_to": "stable"}
            else:
                rec = {
                    "ts": ts,
                    "event": "status",
                    "tracks": {"canary": {"interval": {"p99_ms": i, "error_rate_percent": 1}}},
                }
            f.write(json.dumps(rec) + "\n")
    report = audit.build(path)
    md = audit.render_markdown(report)
    tables = _tables(md)
    assert len(tables["Timeline"]) - 1 == audit.TIMELINE_MAX
    assert f"{report.timeline_total - audit.TIMELINE_MAX} more earlier events not shown" in md
    assert len(tables["Chaos episodes"]) - 1 == audit.LIST_MAX and report.chaos_total == 150
    assert len(tables["Mode changes"]) - 1 == audit.LIST_MAX
    (_info, block), _ = _fences(md)
    assert 30 <= report.chart.size <= audit.CHART_POINTS
    assert report.chart.buckets[report.chart.size - 1]["canary_p99"] == 2999  # max per bucket keeps the last spike
    chart = _chart(block)
    assert chart["columns"] <= audit.CHART_COLUMNS and len(chart["ticks"]) <= audit.MAX_TIME_LABELS
    assert float(chart["rows"][0][0]) >= 2999 and "x" in chart["rows"][0][1]  # the top row holds the spike


def test_since_filters_records() -> None:
    since = history.parse_ts("2024-05-01T12:01:00Z")
    report = audit.build(GOLDEN / "history.jsonl", since=since)
    assert report.first_ts == "2024-05-01T12:01:11.000Z" and report.filtered == 16
    assert "16 earlier records left out" in audit.render_markdown(report)


def test_empty_history_still_renders() -> None:
    report = audit.build("/nonexistent/history.jsonl")
    md = audit.render_markdown(report)
    assert "no records" in md and "_No status refreshes recorded" in md and "## Summary" in md


def test_cli_audit_writes_report_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.yaml").write_text(MANIFEST, encoding="utf-8")
    shutil.copy(GOLDEN / "history.jsonl", tmp_path / "history.jsonl")
    rc = run(["-m", str(tmp_path / "manifest.yaml"), "audit"])
    assert rc == 0
    report = (tmp_path / "audit_report.md").read_text(encoding="utf-8")
    assert "## Policy violations" in report and "```text" in report
    assert "wrote" in capsys.readouterr().out
    out = tmp_path / "r" / "x.md"
    rc = run(
        ["-m", str(tmp_path / "manifest.yaml"), "audit", "--out", str(out), "--since", "2024-05-01T12:01:00Z", "--json"]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["out"] == str(out) and data["records"] == 6 and out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_cli_audit_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["-m", str(tmp_path / "missing.yaml"), "audit"]) == 2
    assert "manifest not found" in capsys.readouterr().err
    (tmp_path / "manifest.yaml").write_text(MANIFEST, encoding="utf-8")
    assert run(["-m", str(tmp_path / "manifest.yaml"), "audit", "--since", "someday"]) == 2
    assert "--since" in capsys.readouterr().err


def test_failed_and_no_op_lifecycle_records(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    records = [
        {"ts": "2024-05-01T12:00:00.000Z", "event": "rollback", "mode_from": "stable", "mode_to": "stable"},
        {"ts": "2024-05-01T12:00:01.000Z", "event": "teardown_failed", "error": "nginx: a | b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    md = audit.render_markdown(audit.build(path))
    tables = _tables(md)
    summary = {row[0]: row[1] for row in tables["Summary"][1:]}
    assert summary["Rollbacks"] == "1" and summary["Teardowns"] == "1 (1 failed)"
    assert "Mode changes" not in tables  # a rollback that changed nothing is not a mode change
    assert tables["Timeline"][2][1:] == ["teardown_failed", "error=nginx: a | b"]


def test_cli_history_rotates_at_max_mb_and_audit_reads_every_file_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST + "history: {max_mb: 0.001, keep: 2}\n", encoding="utf-8")  # rotate at 1 KiB
    for _ in range(12):
        assert run(["-m", str(manifest), "init"]) == 0  # each run appends an `init` record (~0.3-0.6 KB)
    capsys.readouterr()
    path = tmp_path / "history.jsonl"
    names = [f.name for f in history.files(path)]
    assert names == ["history.2.jsonl", "history.1.jsonl", "history.jsonl"]  # keep: 2 rotated files, no more
    assert all(f.stat().st_size <= 1048 for f in history.files(path))
    kept = [json.loads(line) for f in history.files(path) for line in f.read_text().splitlines()]
    assert 2 < len(kept) < 12  # the oldest records went with the oldest file
    assert run(["-m", str(manifest), "audit", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["records"] == len(kept) and data["events"] == {"init": len(kept)}
    report = (tmp_path / "audit_report.md").read_text(encoding="utf-8")
    assert "From `history.2.jsonl`, `history.1.jsonl`, `history.jsonl` (oldest first)" in report
    times = [row[0] for row in _tables(report)["Timeline"][1:]]
    assert times == [r["ts"] for r in kept] and times == sorted(times)  # every file, oldest first


def _status(ts: datetime, tracks: dict) -> dict:
    return {"ts": history.format_ts(ts), "event": "status", "mode": "canary", "tracks": tracks}


def _up(p99: float, err: float, seconds: float = 10) -> dict:
    figures = {"seconds": seconds, "requests": 100, "errors": 0, "p99_ms": p99, "error_rate_percent": err}
    return {"state": "up", "up": True, "interval": figures}


def test_cli_audit_charts_by_time_with_gaps_legend_and_few_labels(tmp_path: Path) -> None:
    """Ten minutes of status records 10 s apart; the canary is down 12:03-12:06, no dashboard runs 12:07-12:08,
    and records are denser for a minute (2 s apart): the chart must show time, not record order."""
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    records, t = [], start
    while t <= start + timedelta(minutes=10):
        step = 2 if timedelta(minutes=8) <= t - start < timedelta(minutes=9) else 10
        t += timedelta(seconds=step)
        minute = (t - start).total_seconds() / 60
        if 7 < minute <= 8:
            continue  # no dashboard was recording
        canary = {"state": "down", "up": False, "interval": None} if 3 <= minute < 6 else _up(80, 4, step)
        records.append(_status(t, {"stable": _up(40, 0.5, step), "canary": canary}))
    records.append({"ts": "2024-05-01T12:10:30.000Z", "event": "policy_decision", "domain": "canary",
                    "engine": "embedded", "verdict": "allow", "allow": True, "violations": [], "gate": "promote_stable",
                    "input": {"window_seconds": 30, "canary": {"requests": 61, "errors": 0, "error_rate_percent": 0,
                              "p50_ms": 9, "p99_ms": 31}, "stable": {"requests": 540, "errors": 2,
                              "error_rate_percent": 0.37, "p50_ms": 8, "p99_ms": 29}}})  # fmt: skip
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (tmp_path / "manifest.yaml").write_text(MANIFEST, encoding="utf-8")
    assert run(["-m", str(tmp_path / "manifest.yaml"), "audit"]) == 0
    text = (tmp_path / "audit_report.md").read_text(encoding="utf-8")
    fences = _fences(text)
    assert [info for info, _ in fences] == ["text", "text", "text"]
    chart = _chart(fences[0][1])
    assert chart["title"].startswith("P99 latency (ms)")
    assert "o stable" in chart["legend"] and "x canary" in chart["legend"] and "blank: no data" in chart["legend"]
    # at most ~12 readable labels, round times, each placed at its own time
    assert 3 <= len(chart["ticks"]) <= 12 and [c for c, _ in chart["ticks"]] == chart["tick_columns"]
    for column, label in chart["ticks"]:
        low, high = _column_time(chart, column)
        moment = datetime.strptime(f"2024-05-01 {label}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        assert low - timedelta(seconds=1) <= moment < high + timedelta(seconds=1), (label, low, high)

    def inside(column: int, first: float, last: float) -> bool:  # the column lies within [first, last] minutes
        low, high = _column_time(chart, column)
        return start + timedelta(minutes=first) <= low and high <= start + timedelta(minutes=last)

    stable, canary = _glyph_columns(chart, "o"), _glyph_columns(chart, "x")
    columns = range(chart["columns"])
    assert all(c not in canary for c in columns if inside(c, 3.2, 5.8))  # down: a gap, not zeros
    assert all(c not in stable and c not in canary for c in columns if inside(c, 7.2, 7.8))  # nobody watched
    assert all(c in stable for c in columns if inside(c, 0.2, 6.8) or inside(c, 8.2, 9.8))
    assert all(c in canary for c in columns if inside(c, 0.2, 2.8) or inside(c, 6.2, 6.8) or inside(c, 8.2, 9.8))
    # the dense minute takes as much width as any other minute: placed by time, not by record
    dense = [c for c in columns if inside(c, 8, 9)]
    sparse = [c for c in columns if inside(c, 1, 2)]
    assert abs(len(dense) - len(sparse)) <= 1
    # the promotion window's own evidence, from its decision record
    window = fences[2][1]
    assert "promote stable: allow (embedded engine), 30 s window" in window
    assert "540 (2 errors)" in window and "61 (0 errors)" in window and "0.37%" in window and "31 ms" in window
    assert "## Promotion windows" in text


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("history: {max_mb: 0}", "history.max_mb: Input should be greater than 0"),
        ("history: {max_mb: true}", "history.max_mb: must be a number, not true"),
        ("history: {keep: 0}", "history.keep: Input should be greater than or equal to 1"),
        ('history: {keep: "3"}', 'history.keep: must be an integer, not the string "3": remove the quotes'),
        ("history: {status_every: 0}", "history.status_every: duration 0 must be greater than 0"),
        ("history: {max_md: 5}", "history.max_md: unknown field; did you mean `max_mb`?"),
    ],
)
def test_cli_history_section_is_validated_like_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, message: str
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST + section + "\n", encoding="utf-8")
    assert run(["-m", str(manifest), "audit"]) == 2
    err = capsys.readouterr().err
    assert "manifest.yaml:3:" in err and message in err and "Traceback" not in err


def test_promotion_window_shows_the_canary_gates_evidence(tmp_path: Path) -> None:
    """A `promote stable` decision with evidence: the chart shows its counts and bounds, marks the broken error-rate
    threshold on the canary's bar, and an allow says what it rested on."""
    from swiftdeploy.policy import evaluate

    track = {"requests": 600, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 20.0, "p99_ms": 100.0}
    bad = dict(track, errors=30, error_rate_percent=5.0)
    path = tmp_path / "history.jsonl"
    denied = evaluate(None, "canary", {"window_seconds": 30, "canary": bad, "stable": track})
    allowed = evaluate(None, "canary", {"window_seconds": 30, "canary": track, "stable": track})
    assert (denied.verdict, allowed.verdict) == ("deny", "allow")
    history.record_decision(path, denied, gate="promote_stable")
    history.record_decision(path, allowed, gate="promote_stable")
    md = audit.render_markdown(audit.build(path))
    blocks = [body for _, body in _fences(md) if "promote stable:" in body]
    deny_block, allow_block = blocks
    assert "evidence (one window):" in deny_block
    assert "errors    30 of 600 canary requests (5%): above " in deny_block and "at 99.5%" in deny_block
    assert "| threshold 1%" in deny_block  # the error-rate rule's threshold, on the error-rate bar
    assert "violation error_rate: 30 of 600 canary requests failed over 30 s (5%)" in deny_block
    slow = "slow      0 to 6 of 600 slower than 500 ms (0%): above 0% at 99.5%; below 1.96% at 95%"  # from quantiles
    assert slow in allow_block
    assert "allowed on error_rate: 600 canary requests, 0 errors over 30 s: error rate below" in allow_block
    assert "allowed on" not in deny_block  # a deny's cleared rules are not what it rests on
