"""The event vocabulary: one registry (history.EVENTS) that `append` enforces and docs/history.md lists, and the
events the operations record through it (the policy gate's `*_blocked`, the `*_failed` of every operation)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swiftdeploy import history
from swiftdeploy.errors import OperationFailed, PolicyBlocked
from swiftdeploy.ops import rollback, teardown
from swiftdeploy.ops.base import Operation
from swiftdeploy.policy.facts import host_facts

DOCS = Path(__file__).resolve().parents[2] / "docs" / "history.md"

# Local runtime, embedded engine: nothing here starts a process or needs a network.
MANIFEST = """\
services: {{image: demo:1, port: 3000, mode: {mode}}}
runtime: local
policy:
  engine: embedded
  thresholds: {{max_cpu_load: 1000, max_memory_used_percent: 100, min_disk_free_gb: {disk}}}
"""


def documented_events() -> list[str]:
    """The first column of docs/history.md's event table (the one headed `| event | written by |`)."""
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| event | written by |"))
    names = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cell = line.split("|")[1].strip()
        match = re.fullmatch(r"`([a-z_.]+)`", cell)
        assert match, f"docs/history.md: event cell {cell!r} is not one `name`"
        names.append(match[1])
    return names


def write_manifest(folder: Path, *, mode: str = "stable", disk: float = 0) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(MANIFEST.format(mode=mode, disk=disk), encoding="utf-8")
    return path


def test_docs_list_exactly_the_registry() -> None:
    assert documented_events() == list(history.EVENTS)


def test_append_refuses_an_unknown_event(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    for event in ("deploy_faild", "rollback_done", "", "Plugin.hello.x", "plugin.hello", "plugin..x", "plugin.a.B"):
        with pytest.raises(ValueError, match="unknown history event"):
            history.append(path, event)
    assert not path.exists()  # refused before anything was opened or written


def test_plugin_events_live_in_their_own_namespace(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    history.append(path, "plugin.hello.facts_read", cpu=2)
    history.append(path, "plugin.my-plugin_2.done")
    assert [r["event"] for r in history.read(path)] == ["plugin.hello.facts_read", "plugin.my-plugin_2.done"]
    assert not any(e.startswith(history.PLUGIN_PREFIX) for e in history.EVENTS)


def test_the_gate_records_the_decision_then_the_blocked_event(tmp_path: Path) -> None:
    # No host has a billion GB free: the infrastructure policy denies on every machine.
    path = write_manifest(tmp_path, disk=1e9)
    with Operation(path, "deploy") as op, pytest.raises(PolicyBlocked) as info:
        op.gate("infrastructure", host_facts(tmp_path), gate="deploy", blocked_event="deploy_blocked", note="x")
    assert info.value.decision.verdict == "deny"
    decision, blocked = list(history.read(tmp_path / "history.jsonl"))
    assert decision["event"] == "policy_decision" and decision["gate"] == "deploy" and decision["verdict"] == "deny"
    assert blocked["event"] == "deploy_blocked" and blocked["verdict"] == "deny" and blocked["note"] == "x"
    assert blocked["runtime"] == "local"
    assert [v["rule"] for v in blocked["violations"]] == [v["rule"] for v in decision["violations"]]
    assert "disk_free" in blocked["violations"][0]["rule"]
    assert op.result.decisions == [info.value.decision.to_dict()]


def test_an_allowing_gate_returns_the_decision_and_records_no_block(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    with Operation(path, "deploy") as op:
        decision = op.gate("infrastructure", host_facts(tmp_path), gate="deploy", blocked_event="deploy_blocked")
    assert decision.allow and decision.verdict == "allow"
    assert [r["event"] for r in history.read(tmp_path / "history.jsonl")] == ["policy_decision"]


def test_failed_rollback_and_teardown_record_failed_events(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, mode="canary")
    (tmp_path / "nginx.conf").mkdir()  # a folder where a generated file goes: neither can be written nor deleted
    with pytest.raises(OperationFailed, match="nginx.conf: the generated file is a folder"):
        rollback(path)
    with pytest.raises(OperationFailed, match="nginx.conf: the generated file is a folder"):
        teardown(path, clean=True)
    records = list(history.read(tmp_path / "history.jsonl"))
    assert [r["event"] for r in records] == ["rollback_failed", "teardown_failed"]
    assert all("the generated file is a folder" in r["error"] and "failed" not in r for r in records)
    assert records[1]["clean"] is True
    assert "mode: canary" in path.read_text()  # the failed rollback changed nothing
