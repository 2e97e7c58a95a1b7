"""A small seeded run of benchmarks/decision_quality.py (the full table is a script): its simulation, both modes,
the report, and that the sequential screen agrees with the policy it stands in for."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path

import pytest

from swiftdeploy.judge import canary_facts, thresholds_of
from swiftdeploy.policy import evaluate

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "decision_quality.py"


@pytest.fixture(scope="module")
def dq():
    spec = importlib.util.spec_from_file_location("decision_quality", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["decision_quality"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("decision_quality", None)


def test_the_cases_are_the_issue_cases(dq) -> None:
    assert dq.RATES == (5, 20, 50, 200) and dq.WEIGHT == 0.1
    assert dq.HEALTHY.median_ms == 20 and dq.HEALTHY.p99_ms == pytest.approx(120, rel=1e-3)
    slower = {c.name: c for c in dq.CASES}["1.5x slower (P99 300 vs 200 ms), harmless"]
    assert (slower.canary.p99_ms, slower.stable.p99_ms) == (pytest.approx(300, rel=1e-3), pytest.approx(200, rel=1e-3))
    assert len(dq.CASES) == 10


def test_samplers_are_exact_in_the_mean(dq) -> None:
    rng = random.Random(7)
    draws = [dq.binomial(rng, 1000, 0.3) for _ in range(400)]
    assert abs(sum(draws) / 400 - 300) < 3 * math.sqrt(1000 * 0.3 * 0.7 / 400)
    counts = dq.bucket_counts(rng, 5000, dq.HEALTHY)
    assert sum(counts) == 5000
    slow = sum(counts[dq.BOUNDS_MS.index(500.0) + 1 :])  # requests over 500 ms: P(lognormal > 25 x median)
    assert slow < 10


def test_a_small_seeded_run(dq) -> None:
    healthy, chaos = dq.CASES[0], dq.CASES[8]
    assert dq.fixed_windows(chaos, 20, 10, "t") == ["deny"] * 10
    fixed = dq.fixed_windows(healthy, 200, 10, "t")
    assert fixed == dq.fixed_windows(healthy, 200, 10, "t")  # seeded
    assert fixed.count("deny") == 0
    runs, audit = dq.sequential_runs(healthy, 200, 5, "t", 60.0, audit_share=0.2)
    assert [v for v, _ in runs] == ["allow"] * 5 and all(5 <= t <= 30 for _, t in runs)
    assert audit.asked >= 5 and audit.disagreements == 0
    lines = dq.report({("fixed", 0, 200): fixed, ("sequential", 0, 200): runs}, 10, 5, 1, 60.0, 1.0)
    assert any(line.startswith("| healthy, 0 % errors | 200 |   0.0 /") for line in lines)
    assert "goals:" in lines


@pytest.mark.parametrize("seed", range(6))
def test_the_screen_agrees_with_the_policy(dq, seed: int) -> None:
    rng = random.Random(seed)
    th = thresholds_of(None)
    for _ in range(25):
        n = rng.choice([10, 60, 150, 600, 3000])
        errors = min(n, rng.choice([0, 1, 3, 8, 30]))
        slow = min(n, rng.choice([0, 1, 5, 20]))
        canary = {
            "requests": n, "errors": errors, "error_rate_percent": 100 * errors / n, "p50_ms": 20.0, "p99_ms": 300.0,
            "slower_than_ms": {"250": min(n, slow + 2), "400": min(n, slow + 1), "500": slow},
        }  # fmt: skip
        stable = None if rng.random() < 0.3 else {**canary, "requests": 9 * n, "errors": rng.choice([0, 5, 40])}
        if stable is not None:
            stable["error_rate_percent"] = 100 * stable["errors"] / stable["requests"]
            stable["p99_ms"] = rng.choice([100.0, 200.0])
        facts = canary_facts(canary, stable, 30.0, th, method=rng.choice(["fixed", "sequential"]))
        assert dq.screen(facts, th) == evaluate(None, "canary", facts).verdict
