"""Host facts: the field names of docs/contracts.md#inputs, this machine's real values, unreadable ones left out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from swiftdeploy.policy import evaluate
from swiftdeploy.policy.facts import host_facts


def test_host_facts_have_the_contract_fields(tmp_path: Path) -> None:
    facts = host_facts(tmp_path)
    assert set(facts) == {
        "disk_free_gb",
        "disk_path",
        "cpu_load_1m",
        "cpu_count",
        "memory_used_percent",
        "memory_available_gb",
    }
    assert facts["disk_path"] == str(tmp_path.resolve())
    assert facts["disk_free_gb"] == pytest.approx(shutil.disk_usage(tmp_path).free / 1024**3, abs=0.5)
    assert facts["cpu_load_1m"] == pytest.approx(os.getloadavg()[0], abs=2.0)
    assert facts["cpu_count"] == psutil.cpu_count()
    assert 0 <= facts["memory_used_percent"] <= 100
    assert facts["memory_available_gb"] > 0


def test_a_path_that_does_not_exist_yet_uses_its_nearest_folder(tmp_path: Path) -> None:
    assert host_facts(tmp_path / "not" / "yet")["disk_path"] == str(tmp_path.resolve())


def test_an_unreadable_fact_is_left_out_and_the_policy_denies(tmp_path: Path, monkeypatch) -> None:
    def broken(path: str):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(psutil, "disk_usage", broken)
    facts = host_facts(tmp_path)
    assert "disk_free_gb" not in facts
    assert facts["unavailable"] == ["disk_free_gb"]
    d = evaluate(None, "infrastructure", facts)
    assert d.verdict == "deny"
    assert [(v.rule, v.field) for v in d.violations if v.rule.startswith("input")] == [
        ("input_missing", "disk_free_gb")
    ]
