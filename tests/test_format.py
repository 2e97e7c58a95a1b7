"""swiftdeploy.format.format_number, and the promise it exists for: one observed value reads the same in every
human view (gate and `policy eval` output, the status dashboard, the audit report)."""

from __future__ import annotations

import os

import pytest

from swiftdeploy.format import format_number


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (612.346, "", "612.35"),
        (612.0, "ms", "612 ms"),
        (0.004912, "", "0.00491"),
        (0.125, "", "0.125"),
        (3.0, "", "3"),
        (-0.0001, "", "-0.0001"),
        (0.0, "", "0"),
        (1e-15, "", "0"),
        (20, "requests", "20 requests"),
        (48.333, "%", "48.33%"),
        (None, "", "null"),
        (True, "", "true"),
        (float("nan"), "", "NaN"),
        (float("-inf"), "", "-inf"),
        ("n/a", "", "n/a"),
    ],
)
def test_format_number(value, unit: str, text: str) -> None:
    assert format_number(value, unit) == text


def test_one_value_reads_the_same_in_every_view(tmp_path, capsys) -> None:
    import json

    from rich.console import Console

    from swiftdeploy import audit, dashboard, history
    from swiftdeploy.cli import run
    from swiftdeploy.cli.output import render_snapshot
    from swiftdeploy.policy import evaluate

    p99 = 612.346
    data = {  # 14 of 600 failed: shown above the 1 % maximum (the canary gate's evidence, docs/policies.md)
        "window_seconds": 30,
        "canary": {"requests": 600, "errors": 14, "error_rate_percent": 2.333, "p50_ms": 20.0, "p99_ms": 100.0},
        "stable": None,
    }
    decision = evaluate(None, "canary", data)
    (v,) = decision.violations
    summary = "error_rate: 2.33% (above 1.04% at 99.5% confidence) vs 1%"
    assert v.summary() == summary

    # policy eval (and a blocked gate: the same renderer)
    (tmp_path / "in.json").write_text(json.dumps(data))
    assert run(["policy", "eval", "canary", "-i", str(tmp_path / "in.json")]) == 3
    assert summary in capsys.readouterr().out

    # the status dashboard: the P99 column and the violation line
    figures = {"seconds": 2.0, "requests": 600, "errors": 14, "rps": 300.0, "error_rate_percent": 2.333,
               "p50_ms": 20.0, "p99_ms": p99}  # fmt: skip
    view = dashboard.TrackView("canary", "up", health="ok", mode="canary", chaos={"mode": "none"}, interval=figures)
    snap = dashboard.Snapshot(
        ts="2024-05-01T12:00:00.000Z",
        project="app",
        mode="canary",
        interval_seconds=2.0,
        window_seconds=30.0,
        tracks={"canary": view},
        decisions={"canary": dashboard.DomainView("canary", "deny", "embedded", [v.to_dict()])},
    )
    with open(os.devnull, "w") as sink:
        console = Console(width=200, record=True, file=sink)
        console.print(render_snapshot(snap))
    shown = console.export_text()
    (row,) = [line for line in shown.splitlines() if "last 2s" in line]
    assert row.split()[-2] == "612.35", row  # the P99 column, before the trend
    assert row.split()[-4] == "2.33", row  # the error rate column
    assert summary in shown  # (the message after it is the policy's own sprintf)

    # the audit report of the same decision
    path = tmp_path / "history.jsonl"
    history.record_decision(path, decision)
    text = audit.render_markdown(audit.build(path))
    assert "| 2.33% | 1% |" in text
