"""`swiftdeploy history` through the CLI entry: the table without status records unless asked, event names and
families, the last N, --since, --json, a torn line counted, an unknown event refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftdeploy import history
from swiftdeploy.cli import run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A manifest and a history: a deploy, a refresh, a blocked promotion, a plugin event, a torn line."""
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("services: {image: demo:1, port: 3000}\nruntime: local\n", encoding="utf-8")
    path = tmp_path / "history.jsonl"
    history.append(path, "deploy_started", mode="stable", image="demo:1", version="1.0.0", runtime="local")
    history.append(path, "status", project="swiftdeploy-app", mode="stable", tracks={}, decisions={})
    history.append(path, "deploy_succeeded", mode="stable", image="demo:1", version="1.0.0", seconds=1.5)
    history.append(path, "status", project="swiftdeploy-app", mode="canary", tracks={}, decisions={})
    history.append(path, "promote_started", target="stable", image="demo:2", version="2.0.0", window_seconds=30)
    violation = {"rule": "error_rate", "message": "too many errors", "observed": 12.5, "threshold": 1, "unit": "%"}
    history.append(path, "policy_decision", domain="canary", engine="embedded", verdict="deny", violations=[violation])
    history.append(path, "promote_blocked", target="stable", verdict="deny", violations=[violation])
    history.append(path, "plugin.hello.facts_read", count=3)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"ts": "2024-05-01T12:00:00Z", "event": "deploy_st')  # a torn last line
    return manifest


def history_json(capsys, manifest: Path, *args: str) -> dict:
    assert run(["-m", str(manifest), "history", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def events(doc: dict) -> list[str]:
    return [r["event"] for r in doc["records"]]


def test_table_leaves_status_records_out(project, capsys) -> None:
    assert run(["-m", str(project), "history"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "EVENT", "DETAILS"]
    body = [line.split()[2] for line in lines[2:] if line.strip()]
    assert body == [
        "deploy_started",
        "deploy_succeeded",
        "promote_started",
        "policy_decision",
        "promote_blocked",
        "plugin.hello.facts_read",
    ]
    decision = next(line for line in lines if "policy_decision" in line)
    assert "canary: deny via embedded; 1 violation (error_rate)" in decision  # the audit timeline's details
    assert "1 invalid line(s)" in captured.err and "skipped" in captured.err


def test_events_families_last_and_since(project, capsys) -> None:
    everything = history_json(capsys, project)
    assert "status" not in events(everything) and everything["skipped"] == 1
    assert events(history_json(capsys, project, "--event", "status")) == ["status", "status"]
    assert events(history_json(capsys, project, "-e", "promote")) == ["promote_started", "promote_blocked"]
    both = history_json(capsys, project, "-e", "deploy_succeeded", "-e", "plugin.hello")
    assert events(both) == ["deploy_succeeded", "plugin.hello.facts_read"]
    assert events(history_json(capsys, project, "-n", "2")) == ["promote_blocked", "plugin.hello.facts_read"]
    assert history_json(capsys, project, "--since", "1m")["records"] == everything["records"]
    assert history_json(capsys, project, "--since", "2999-01-01")["records"] == []
    blocked = history_json(capsys, project, "-e", "promote_blocked")["records"][0]
    assert blocked["violations"][0]["observed"] == 12.5  # records as written


def test_unknown_event_and_bad_since_are_exit_2(project, capsys) -> None:
    assert run(["-m", str(project), "history", "--event", "promote_blokced"]) == 2
    err = capsys.readouterr().err
    assert "--event 'promote_blokced' is not an event" in err and "did you mean promote_blocked" in err
    assert run(["-m", str(project), "history", "--since", "yesterday"]) == 2
    assert "--since 'yesterday' is not a time" in capsys.readouterr().err


def test_no_history_yet(tmp_path, capsys) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("services: {image: demo:1, port: 3000}\n", encoding="utf-8")
    assert run(["-m", str(manifest), "history"]) == 0
    assert "no history yet" in capsys.readouterr().err
    assert history_json(capsys, manifest) == {"history": str(tmp_path / "history.jsonl"), "records": [], "skipped": 0}
