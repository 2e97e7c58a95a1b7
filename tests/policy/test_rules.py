"""Table-driven tests of the default policies over the real embedded engine (regorus): every rule just under,
at and over its threshold, empty input and wrong types."""

from __future__ import annotations

from typing import Any

import pytest

from swiftdeploy.policy import Decision, evaluate

HOST = {"disk_free_gb": 50.0, "disk_path": "/srv", "cpu_load_1m": 0.5, "cpu_count": 2, "memory_used_percent": 40.0}
TRACK = {"requests": 200, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 20.0, "p99_ms": 100.0}


def host(**changes: Any) -> dict[str, Any]:
    return {**HOST, **changes}


def canary(stable: dict | None = None, **changes: Any) -> dict[str, Any]:
    return {"window_seconds": 30, "canary": {**TRACK, **changes}, "stable": stable}


def rules(d: Decision) -> set[str]:
    return {v.rule for v in d.violations}


# (domain, input, expected verdict, expected violated rules) - defaults: disk >= 10 GB, load <= 2.0 per core
# (HOST has 2 cores: load <= 4), memory <= 90 %, error rate <= 1 %, P99 <= 500 ms, >= 20 requests, +0.5 points /
# 2x P99 vs stable (the P99 ratio only from a canary P99 of 250 ms).
CASES = [
    ("infrastructure", host(), "allow", set()),
    ("infrastructure", host(disk_free_gb=9.99), "deny", {"disk_free"}),
    ("infrastructure", host(disk_free_gb=10), "allow", set()),
    ("infrastructure", host(disk_free_gb=10.01), "allow", set()),
    ("infrastructure", host(cpu_load_1m=2.0), "allow", set()),  # a normal busy 2-core host
    ("infrastructure", host(cpu_load_1m=3.99), "allow", set()),
    ("infrastructure", host(cpu_load_1m=4.0), "allow", set()),
    ("infrastructure", host(cpu_load_1m=4.01), "deny", {"cpu_load_per_core"}),
    ("infrastructure", host(cpu_load_1m=2.01, cpu_count=1), "deny", {"cpu_load_per_core"}),
    ("infrastructure", host(cpu_load_1m=30, cpu_count=16), "allow", set()),
    ("infrastructure", host(memory_used_percent=89.99), "allow", set()),
    ("infrastructure", host(memory_used_percent=90), "allow", set()),
    ("infrastructure", host(memory_used_percent=90.01), "deny", {"memory_used"}),
    ("canary", canary(error_rate_percent=0.99, errors=1), "allow", set()),
    ("canary", canary(error_rate_percent=1.0, errors=2), "allow", set()),
    ("canary", canary(error_rate_percent=1.01, errors=3), "deny", {"error_rate"}),
    ("canary", canary(p99_ms=499.999), "allow", set()),
    ("canary", canary(p99_ms=500), "allow", set()),
    ("canary", canary(p99_ms=500.001), "deny", {"p99_latency"}),
    ("canary", canary(requests=19), "inconclusive", {"min_requests"}),
    ("canary", canary(requests=20), "allow", set()),
    ("canary", canary(requests=21), "allow", set()),
    ("canary", canary(requests=6, p99_ms=612.0), "deny", {"p99_latency", "min_requests"}),
    ("canary", canary(TRACK, error_rate_percent=0.49, errors=1), "allow", set()),
    ("canary", canary(TRACK, error_rate_percent=0.5, errors=1), "allow", set()),
    ("canary", canary(TRACK, error_rate_percent=0.51, errors=1), "deny", {"error_rate_vs_stable"}),
    ("canary", canary({**TRACK, "p99_ms": 150.0}, p99_ms=299.9), "allow", set()),
    ("canary", canary({**TRACK, "p99_ms": 150.0}, p99_ms=300), "allow", set()),
    ("canary", canary({**TRACK, "p99_ms": 150.0}, p99_ms=300.1), "deny", {"p99_vs_stable"}),
    ("canary", canary(TRACK, p99_ms=249.9), "allow", set()),  # 2.5x, but under the 250 ms noise floor
    ("canary", canary(TRACK, p99_ms=250), "deny", {"p99_vs_stable"}),  # at the floor the ratio rule applies
    ("canary", canary(None, p99_ms=400.0), "allow", set()),  # no baseline: relative rules skipped
]


@pytest.mark.parametrize(("domain", "data", "verdict", "violated"), CASES)
def test_threshold_boundaries(domain: str, data: dict, verdict: str, violated: set[str]) -> None:
    d = evaluate(None, domain, data)
    assert (d.verdict, rules(d)) == (verdict, violated), d.to_dict()
    assert d.allow is (verdict == "allow")
    assert d.engine == "embedded"
    assert d.input == data


def test_violation_carries_observed_threshold_unit_and_message() -> None:
    d = evaluate(None, "canary", canary(p99_ms=612.5))
    [v] = d.violations
    assert (v.rule, v.observed, v.threshold, v.unit) == ("p99_latency", 612.5, 500, "ms")
    assert "612.5" in v.message and "500" in v.message
    assert v.summary() == "p99_latency: 612.5 vs 500 ms"


def test_relative_error_rule_reports_the_difference_in_points() -> None:
    d = evaluate(None, "canary", canary({**TRACK, "error_rate_percent": 0.2}, error_rate_percent=0.9, errors=2))
    [v] = d.violations
    assert (v.rule, v.observed, v.threshold, v.unit) == ("error_rate_vs_stable", 0.7, 0.5, "points")


STABLE_FIELDS = {"stable.errors", "stable.error_rate_percent", "stable.p50_ms", "stable.p99_ms"}
MALFORMED = [
    ("infrastructure", {}, {"disk_free_gb", "cpu_load_1m", "cpu_count", "memory_used_percent"}),
    ("infrastructure", host(disk_free_gb="50"), {"disk_free_gb"}),
    ("infrastructure", host(cpu_load_1m=None), {"cpu_load_1m"}),
    ("infrastructure", host(memory_used_percent=True), {"memory_used_percent"}),
    ("infrastructure", host(cpu_count="4"), {"cpu_count"}),
    ("infrastructure", host(disk_path=7), {"disk_path"}),
    ("infrastructure", host(disk_free_gb=-3), {"disk_free_gb"}),
    ("infrastructure", [HOST], {"input", "disk_free_gb", "cpu_load_1m", "cpu_count", "memory_used_percent"}),
    ("infrastructure", host(cpu_count=0), {"cpu_count"}),
    ("infrastructure", host(running_version=1, requested_version="1.0.0"), {"running_version"}),
    ("infrastructure", host(direct="yes"), {"direct"}),
    ("canary", {}, {"window_seconds", "canary", "stable"}),
    ("canary", {"window_seconds": 30, "canary": TRACK}, {"stable"}),
    ("canary", {**canary(), "window_seconds": "30s"}, {"window_seconds"}),
    ("canary", {**canary(), "canary": "ok"}, {"canary"}),
    ("canary", {**canary(), "stable": 5}, {"stable"}),
    ("canary", canary(p99_ms="600"), {"canary.p99_ms"}),
    ("canary", canary(requests="lots"), {"canary.requests"}),
    ("canary", canary(p99_ms=None), {"canary.p99_ms"}),
    (
        "canary",
        canary({"requests": 100}),
        {f"stable.{f}" for f in ("errors", "error_rate_percent", "p50_ms", "p99_ms")},
    ),
    ("canary", "promote me", {"input", "window_seconds", "canary", "stable"}),
]


@pytest.mark.parametrize(("domain", "data", "fields"), MALFORMED)
def test_malformed_input_is_denied_naming_the_field(domain: str, data: Any, fields: set[str]) -> None:
    d = evaluate(None, domain, data)
    assert d.verdict == "deny" and d.allow is False
    named = {v.field for v in d.violations if v.rule.startswith("input_")}
    assert named == fields, d.to_dict()
    for v in d.violations:
        if v.field and v.field != "input":
            assert v.field.split(".")[-1] in v.message


def test_empty_window_is_inconclusive_not_denied() -> None:
    empty = {"requests": 0, "errors": 0, "error_rate_percent": 0.0, "p50_ms": None, "p99_ms": None}
    d = evaluate(None, "canary", {"window_seconds": 30, "canary": empty, "stable": empty})
    assert d.verdict == "inconclusive" and not d.allow
    assert rules(d) == {"min_requests"}


def test_manifest_thresholds_override_the_defaults(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: embedded\n  thresholds: {max_p99_latency_ms: 700, min_requests: 5}\n")
    assert evaluate(m, "canary", canary(requests=6, p99_ms=612.0)).verdict == "allow"
    d = evaluate(m, "canary", canary(requests=6, p99_ms=701.0))
    assert [(v.rule, v.threshold) for v in d.violations] == [("p99_latency", 700)]


def test_max_cpu_load_when_set_replaces_the_per_core_rule(write_manifest) -> None:
    """Someone who set `max_cpu_load` keeps the whole-host rule: 5 on one core passes a maximum of 8."""
    m = write_manifest("policy:\n  engine: embedded\n  thresholds: {max_cpu_load: 8}\n")
    assert evaluate(m, "infrastructure", host(cpu_load_1m=5, cpu_count=1)).allow
    d = evaluate(m, "infrastructure", host(cpu_load_1m=8.5, cpu_count=16))
    assert [(v.rule, v.threshold) for v in d.violations] == [("cpu_load", 8)]
    assert "policy.thresholds.max_cpu_load" in d.violations[0].message


def test_every_host_rule_names_the_threshold_to_change() -> None:
    d = evaluate(None, "infrastructure", host(disk_free_gb=1, cpu_load_1m=9, memory_used_percent=99))
    names = {v.rule: v.message for v in d.violations}
    assert set(names) == {"disk_free", "cpu_load_per_core", "memory_used"}
    assert "policy.thresholds.min_disk_free_gb" in names["disk_free"]
    assert "policy.thresholds.max_cpu_load_per_core" in names["cpu_load_per_core"]
    assert "policy.thresholds.max_memory_used_percent" in names["memory_used"]
    [v] = [v for v in d.violations if v.rule == "cpu_load_per_core"]
    assert (v.observed, v.threshold, v.unit) == (4.5, 2.0, "load/core")
    assert "9 on 2 CPUs is 4.5 per core" in v.message


RELEASE = {
    "running_version": "1.0.0",
    "running_image": "api:1",
    "requested_version": "1.0.0",
    "requested_image": "api:1",
}


@pytest.mark.parametrize(
    ("changes", "verdict"),
    [
        ({}, "allow"),  # the same release: a converge, not a change
        ({"running_version": None, "running_image": None}, "allow"),  # nothing runs: the first deploy
        ({"requested_version": "1.1.0"}, "deny"),
        ({"requested_image": "api:2"}, "deny"),
        ({"requested_version": "1.1.0", "direct": True}, "allow"),  # deploy --direct
        ({"requested_version": "1.1.0", "direct": False}, "deny"),
    ],
)
def test_direct_version_change(changes: dict, verdict: str) -> None:
    d = evaluate(None, "infrastructure", host(**{**RELEASE, **changes}))
    assert d.verdict == verdict, d.to_dict()
    if verdict == "deny":
        [v] = d.violations
        assert v.rule == "direct_version_change"
        for hint in ("promote canary", "rollout", "deploy --direct", "policy.thresholds.allow_direct_deploy: true"):
            assert hint in v.message


def test_allow_direct_deploy_threshold(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: embedded\n  thresholds: {allow_direct_deploy: true}\n")
    assert evaluate(m, "infrastructure", host(**{**RELEASE, "requested_version": "2.0.0"})).allow
