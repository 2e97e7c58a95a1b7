"""audit: golden report on a fixed history, parsed as Markdown; skipped lines; escaping; bounded tables; CLI."""

from __future__ import annotations

import json
import shutil
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


def test_golden_report() -> None:
    report = audit.build(GOLDEN / "history.jsonl")
    text = audit.render_markdown(report, generated_at=GENERATED_AT)
    assert text == (GOLDEN / "audit_report.md").read_text(encoding="utf-8")


def test_report_parses_as_gfm_with_expected_tables_and_mermaid() -> None:
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
    assert [info for info, _ in fences] == ["mermaid", "mermaid"]
    p99 = fences[0][1]
    assert "xychart-beta" in p99 and 'title "P99 latency (ms)"' in p99
    lines = [ln.strip() for ln in p99.splitlines() if ln.strip().startswith("line [")]
    assert lines == ["line [12, 13, 14, 13, 13, 13, 13]", "line [0, 0, 0, 20, 21, 22, 23]"]
    assert "line [0, 0, 0, 50, 50, 50, 50]" in fences[1][1]


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
    (info, chart), _ = _fences(md)
    canary = [ln for ln in chart.splitlines() if ln.strip().startswith("line [")][1]
    values = [float(v) for v in canary.strip()[len("line [") : -1].split(",")]
    assert 30 <= len(values) <= audit.CHART_POINTS
    assert values == sorted(values) and values[-1] == 2999  # max per bucket keeps the last spike


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
    assert "## Policy violations" in report and "```mermaid" in report
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
        {"ts": "2024-05-01T12:00:01.000Z", "event": "teardown", "failed": True, "error": "nginx: a | b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    md = audit.render_markdown(audit.build(path))
    tables = _tables(md)
    summary = {row[0]: row[1] for row in tables["Summary"][1:]}
    assert summary["Rollbacks"] == "1" and summary["Teardowns"] == "1 (1 failed)"
    assert "Mode changes" not in tables  # a rollback that changed nothing is not a mode change
    assert tables["Timeline"][2][2] == "failed=True; error=nginx: a | b"
