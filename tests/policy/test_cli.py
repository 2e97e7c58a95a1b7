"""`swiftdeploy policy test | eval | check`: output and exit codes (docs/contracts.md#exit-codes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import free_port, relaxed_host_thresholds

from swiftdeploy.cli import run

REPO = Path(__file__).resolve().parents[2]
SLOW = {
    "window_seconds": 30,
    "canary": {"requests": 6, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 600.0, "p99_ms": 612.5},
    "stable": None,
}
# 600 clean canary requests: enough to show an error rate and a slow share below 2 % with 95 % confidence
GOOD = {
    "window_seconds": 30,
    "canary": {"requests": 600, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 5.0, "p99_ms": 9.0},
    "stable": {"requests": 5400, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 5.0, "p99_ms": 9.0},
}


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty folder: no ./manifest.yaml, so the defaults apply."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWIFTDEPLOY_MANIFEST", raising=False)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_policy_test_lists_every_test_and_passes(capsys) -> None:
    assert run(["policy", "test"]) == 0
    out = capsys.readouterr().out
    names = set()
    for path in (REPO / "policies").glob("*_test.rego"):
        package = re.search(r"^package (\S+)", path.read_text(), re.M).group(1)
        names |= {f"data.{package}.{n}" for n in re.findall(r"^(test_\w+)", path.read_text(), re.M)}
    assert len(names) > 40
    for name in names:
        assert re.search(rf"^PASS {re.escape(name)} ", out, re.M), name
    assert f"{len(names)} passed, 0 failed" in out


def test_policy_test_reports_failures_by_name(tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x_test.rego").write_text(
        "package x_test\n\nimport rego.v1\n\n"
        "test_true if true\n\n"
        "test_false if false\n\n"
        "test_undefined if input.nothing == 1\n\n"
        'test_error if to_number("abc") == 1\n'
    )
    assert run(["policy", "test", "--dir", str(rules)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^PASS data\.x_test\.test_true ", out, re.M)
    assert re.search(r"^FAIL data\.x_test\.test_false .*undefined", out, re.M)  # false body -> undefined rule
    assert re.search(r"^FAIL data\.x_test\.test_undefined .*undefined", out, re.M)
    assert re.search(r"^FAIL data\.x_test\.test_error ", out, re.M)
    assert "1 passed, 3 failed" in out

    assert run(["policy", "test", "--dir", str(rules), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["passed"], report["failed"]) == (1, 3)
    assert {t["name"]: t["passed"] for t in report["tests"]} == {
        "data.x_test.test_true": True,
        "data.x_test.test_false": False,
        "data.x_test.test_undefined": False,
        "data.x_test.test_error": False,
    }


def test_policy_test_without_tests_fails(tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.rego").write_text("package a\n\nimport rego.v1\n\nx := 1\n")
    assert run(["policy", "test", "--dir", str(rules)]) == 1
    assert "no test_* rules" in capsys.readouterr().err


def test_policy_eval_deny_prints_every_violation_and_exits_3(tmp_path: Path, capsys) -> None:
    assert run(["policy", "eval", "canary", "--input", str(write_json(tmp_path / "in.json", SLOW))]) == 3
    out = capsys.readouterr().out
    assert "canary: deny (embedded engine)" in out
    # P50 600 ms: at least half of the 6 requests were slower than 500 ms; that alone is evidence enough
    assert "p99_latency: 50% (above 6.63% at 99.5% confidence) vs 1%" in out
    assert "3 to 6 of 6 canary requests took longer than 500 ms over 30 s" in out
    assert "min_requests" not in out  # a deny names what breaks the rules, not what is merely unproven


def test_policy_eval_allow_exits_0(tmp_path: Path, capsys) -> None:
    assert run(["policy", "eval", "canary", "-i", str(write_json(tmp_path / "in.json", GOOD))]) == 0
    out = capsys.readouterr().out
    assert "canary: allow" in out
    # an allow says what it rests on
    assert "error_rate: 0% (below 0.498% at 95% confidence) vs 2%" in out
    assert "600 canary requests, 0 errors over 30 s: error rate below 0.498% with 95% confidence" in out


def test_policy_eval_inconclusive_exits_3(tmp_path: Path, capsys) -> None:
    few = {**GOOD, "canary": {**GOOD["canary"], "requests": 60}}
    assert run(["policy", "eval", "canary", "-i", str(write_json(tmp_path / "in.json", few))]) == 3
    out = capsys.readouterr().out
    assert "canary: inconclusive" in out
    assert "about 89 more canary requests would settle it (~44.5 s at the current 2 req/s)" in out


def test_policy_eval_json_is_only_json(tmp_path: Path, capsys) -> None:
    assert run(["policy", "eval", "canary", "-i", str(write_json(tmp_path / "in.json", SLOW)), "--json"]) == 3
    decision = json.loads(capsys.readouterr().out)
    assert decision["verdict"] == "deny" and decision["allow"] is False and decision["engine"] == "embedded"
    assert {k: decision["input"][k] for k in SLOW} == SLOW
    assert decision["input"]["evidence"]["method"] == "fixed"  # derived from the tracks: they were well formed
    assert {v["rule"] for v in decision["violations"]} == {"p99_latency"}
    assert set(decision["violations"][0]) >= {
        "rule", "message", "observed", "threshold", "unit", "bound", "bound_kind", "confidence_percent", "counts",
        "window_seconds",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"window_seconds": 30,\n  "canary": }', "in.json:2:13: invalid JSON"),
        ('{"window_seconds": NaN}', "NaN is not JSON"),
        (None, "cannot read the input file"),
    ],
)
def test_policy_eval_bad_input_file_exits_2(tmp_path: Path, capsys, content: str | None, error: str) -> None:
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    assert run(["policy", "eval", "canary", "-i", str(path)]) == 2
    assert error in capsys.readouterr().err


def test_policy_eval_unknown_domain_exits_2(tmp_path: Path, capsys) -> None:
    assert run(["policy", "eval", "canry", "-i", str(write_json(tmp_path / "in.json", GOOD))]) == 2
    assert "unknown policy domain 'canry'" in capsys.readouterr().err


def test_policy_eval_uses_the_manifest(tmp_path: Path, write_manifest, capsys) -> None:
    slow = {"p50_ms": 600.0, "p99_ms": 650.0}  # both tracks equally slow: the relative rule has nothing to say
    slowish = {**GOOD, "canary": {**GOOD["canary"], **slow}, "stable": {**GOOD["stable"], **slow}}
    path = write_json(tmp_path / "in.json", slowish)
    assert run(["policy", "eval", "canary", "-i", str(path)]) == 3  # defaults: half the requests over 500 ms
    write_manifest("policy:\n  engine: embedded\n  thresholds: {max_p99_latency_ms: 700}\n", engine=None)
    assert run(["policy", "eval", "canary", "-i", str(path)]) == 0  # P99 650 <= 700: at most 1 % slower


def test_explicit_missing_manifest_exits_2(tmp_path: Path, capsys) -> None:
    assert run(["-m", "nope.yaml", "policy", "eval", "canary", "-i", str(write_json(tmp_path / "in.json", GOOD))]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_opa_engine_unreachable_exits_4(tmp_path: Path, write_manifest, capsys) -> None:
    port = free_port()  # nothing listens there: a real connection refused
    write_manifest(f"policy:\n  engine: opa\nopa: {{port: {port}, timeout: 1}}\n", engine=None)
    assert run(["policy", "eval", "canary", "-i", str(write_json(tmp_path / "in.json", GOOD))]) == 4
    err = capsys.readouterr().err
    assert f"OPA at http://127.0.0.1:{port} is unreachable" in err


def lenient(**strict: float) -> str:
    return f"policy:\n  engine: embedded\n  thresholds: {relaxed_host_thresholds(**strict)}\n"


def test_policy_check_allows_with_lenient_thresholds(write_manifest, capsys) -> None:
    write_manifest(lenient(), engine=None)
    assert run(["policy", "check"]) == 0
    out = capsys.readouterr().out
    assert "facts: disk_path=" in out and "infrastructure: allow" in out


def test_policy_check_denies_with_strict_thresholds(write_manifest, tmp_path: Path, capsys) -> None:
    write_manifest(lenient(min_disk_free_gb=1000000000), engine=None)
    assert run(["policy", "check", "--json"]) == 3
    decision = json.loads(capsys.readouterr().out)
    assert decision["domain"] == "infrastructure" and decision["verdict"] == "deny"
    [v] = decision["violations"]
    assert v["rule"] == "disk_free" and v["threshold"] == 1000000000
    assert decision["input"]["disk_path"] == str(tmp_path.resolve())
    assert v["observed"] == decision["input"]["disk_free_gb"]


def test_a_busy_two_core_host_passes_the_default_cpu_rule(tmp_path: Path, capsys) -> None:
    """A 1-minute load of 2.0 on 2 cores is an ordinary busy machine: the default judges load per core."""
    facts = {"disk_free_gb": 50, "cpu_load_1m": 2.0, "cpu_count": 2, "memory_used_percent": 40}
    assert run(["policy", "eval", "infrastructure", "-i", str(write_json(tmp_path / "busy.json", facts))]) == 0
    assert "infrastructure: allow" in capsys.readouterr().out
    overloaded = {**facts, "cpu_load_1m": 4.5}
    assert run(["policy", "eval", "infrastructure", "-i", str(write_json(tmp_path / "over.json", overloaded))]) == 3
    out = capsys.readouterr().out
    assert "cpu_load_per_core: 2.25 vs 2 load/core" in out
    assert "raise policy.thresholds.max_cpu_load_per_core" in out
