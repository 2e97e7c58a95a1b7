"""Differential test: the embedded engine (regorus) and the real OPA server decide the same way.

One manifest with threshold overrides; its generated bundle is served by a real `opa run --server` on 127.0.0.1,
started exactly as `deploy` starts it (runtime/opa_service.py), and the embedded engine evaluates the same policy
set. Hypothesis sends each engine the same input, at least INPUTS per domain: valid inputs, values at and around
every threshold of the manifest, missing fields, wrong types, null, huge and tiny numbers, unicode, extra keys and
inputs that are not objects at all; for the canary also its evidence (docs/policies.md#input): every field
malformed in turn, and the evidence swiftdeploy computes from consistent tracks with its bounds at the thresholds.
Verdict, allow and the set of violations (rule, field, observed, threshold, unit) must be identical; the first
difference fails the test and Hypothesis prints it shrunk to a minimal input.

The inputs are built from field tables (INFRASTRUCTURE, TRACK, CANARY, EVIDENCE and its parts): a new input field
is one more entry with its strategy, and every record strategy below drops, mistypes and adds keys for it
automatically.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swiftdeploy.errors import PolicyError
from swiftdeploy.judge import EVIDENCE_THRESHOLDS, EvidenceError, evidence
from swiftdeploy.policy.bundle import expected_revision, load_policy_set
from swiftdeploy.policy.embedded import EmbeddedEngine
from swiftdeploy.policy.opa import OpaEngine, opa_url

INPUTS = 2000  # per domain, at least

# Thresholds a manifest overrides (the rest are policies/data.json's defaults): the boundaries below use the merged
# values, so the differential test covers the numbers a real deployment compares against.
OVERRIDES = """\
policy:
  engine: opa
  thresholds:
    max_cpu_load: 3.5
    min_disk_free_gb: 2.25
    max_memory_used_percent: 95
    max_error_rate_percent: 2.5
    bad_error_rate_percent: 4
    max_p99_latency_ms: 400
    max_slow_percent: 1.5
    bad_slow_percent: 3
    min_requests: 30
    deny_confidence_percent: 99
    ratio_confidence_percent: 97.5
    allow_confidence_percent: 90
    max_error_rate_ratio: 1.75
    max_p99_ratio: 1.5
    min_p99_ms_for_ratio: 120
"""

# --- values ------------------------------------------------------------------------------------------------------

UNICODE = st.text(
    alphabet=st.sampled_from(list("ab09 .-_/") + list("éß中ك😀\u200b\ufeff\U0001f4a9\u2028\x00")), max_size=8
)
HUGE = st.sampled_from([1e300, -1e300, 1.7976931348623157e308, 10**30, -(10**30), 2**53 + 1, 2**63, 2**64 + 7])
TINY = st.sampled_from([5e-324, -5e-324, 1e-300, 2.2250738585072014e-308, 1e-9, -1e-9, 0.0, -0.0])
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    UNICODE,
    st.sampled_from(["600", "1e3", "", "NaN", "null", "0"]),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(UNICODE, st.integers(0, 3), max_size=2),
)
ANY_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), UNICODE),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(UNICODE, inner, max_size=3)),
    max_leaves=6,
)


def around(*values: float) -> st.SearchStrategy[float]:
    """A value at, just under and just over each boundary (an equal value passes, only beyond violates)."""
    points: set[float] = set()
    for v in values:
        points |= {v, v - 1, v + 1, v - 0.01, v + 0.01, math.nextafter(v, -math.inf), math.nextafter(v, math.inf)}
        if v:
            points |= {v * 2, v / 2}
    return st.sampled_from(sorted(points))


def number(*boundaries: float, low: float = 0, high: float = 1000) -> st.SearchStrategy[Any]:
    """A field the policy reads as a number: mostly well-formed, sometimes at a boundary, huge, tiny or wrong."""
    return st.one_of(
        st.floats(low, high, allow_nan=False),
        st.integers(int(low), int(high)),
        around(*boundaries, 0),
        st.floats(-high, 0, allow_nan=False),
        HUGE,
        TINY,
        WRONG,
    )


def record(fields: dict[str, st.SearchStrategy[Any]], *, required: float = 0.9) -> st.SearchStrategy[Any]:
    """An object with `fields`: each kept with its own strategy (mostly), dropped, or replaced by any JSON value;
    sometimes extra keys (unicode names, or near-misses of real ones)."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, strategy in fields.items():
            roll = draw(st.floats(0, 1))
            if roll < required:
                out[name] = draw(strategy)
            elif roll < required + (1 - required) / 2:
                out[name] = draw(ANY_JSON)
            # else: missing
        if draw(st.integers(0, 9)) == 0:
            extra = draw(st.dictionaries(st.one_of(UNICODE, st.sampled_from([f"{k}_" for k in fields])), ANY_JSON))
            out.update({k: v for k, v in extra.items() if k not in fields})
        return out

    return build()


def complete(draw: st.DrawFn, out: dict[str, Any], table: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A hand-built record gets every other field of its table too: a field added to a table reaches every
    strategy of that record."""
    for name, strategy in table.items():
        if name not in out:
            out[name] = draw(strategy)
    return out


def not_an_object() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(), UNICODE, st.lists(ANY_JSON, max_size=3))


# --- the inputs, one field table per record ------------------------------------------------------------------------


def infrastructure_inputs(t: dict[str, Any]) -> st.SearchStrategy[Any]:
    INFRASTRUCTURE = {
        "disk_free_gb": number(t["min_disk_free_gb"], high=500),
        "disk_path": st.one_of(st.just("/srv/app"), UNICODE, WRONG),
        "cpu_load_1m": number(t["max_cpu_load"], high=64),
        "cpu_count": number(1, 2, high=256),
        "memory_used_percent": number(t["max_memory_used_percent"], 100, high=100),
        "memory_available_gb": number(0, high=512),
        "unavailable": st.one_of(st.lists(st.sampled_from(["cpu_load_1m", "disk_free_gb"]), max_size=2), WRONG),
    }
    return st.one_of(record(INFRASTRUCTURE), record(INFRASTRUCTURE, required=1.0), not_an_object())


def canary_inputs(t: dict[str, Any]) -> st.SearchStrategy[Any]:
    bounds = [t["min_requests"], t["max_error_rate_percent"], t["max_p99_latency_ms"], t["min_p99_ms_for_ratio"]]

    latency = st.one_of(
        st.floats(0, 2000, allow_nan=False),
        around(*bounds).filter(lambda v: v >= 0),
        HUGE.filter(lambda v: v > 0),
        TINY.filter(lambda v: v >= 0),
    )

    TRACK = {
        "requests": number(t["min_requests"], high=5000),
        "errors": number(0, 1, high=5000),
        "error_rate_percent": number(t["max_error_rate_percent"], 100, high=100),
        "p50_ms": st.one_of(st.none(), number(*bounds, high=2000)),
        "p99_ms": st.one_of(st.none(), number(*bounds, high=2000)),
    }

    @st.composite
    def consistent_track(draw: st.DrawFn) -> dict[str, Any]:
        """A track as metrics.canary_input measures it: errors <= requests, the rate derived, null latencies only
        without requests - the inputs that reach the threshold rules."""
        requests = draw(st.one_of(st.integers(0, 5000), around(t["min_requests"]).map(lambda v: max(0, int(v)))))
        errors = draw(st.integers(0, requests)) if requests else 0
        rate = errors / requests * 100 if requests else 0.0
        rate = draw(st.one_of(st.just(rate), around(t["max_error_rate_percent"]).map(lambda v: max(0.0, v))))
        p50, p99 = sorted(draw(st.lists(latency, min_size=2, max_size=2))) if requests else (None, None)
        out = {"requests": requests, "errors": errors, "error_rate_percent": rate, "p50_ms": p50, "p99_ms": p99}
        return complete(draw, out, TRACK)

    # The evidence (docs/policies.md#input): field tables like TRACK's, so each evidence field is also dropped,
    # mistyped and joined by extra keys; the percents and ratios the rules compare come at and around every
    # threshold they are compared with.
    percent = number(
        t["max_error_rate_percent"], t["bad_error_rate_percent"], t["max_slow_percent"], t["bad_slow_percent"], 100,
        high=100,
    )  # fmt: skip
    count = number(t["min_requests"], 1, high=5000)
    ratio = number(t["max_error_rate_ratio"], 1, high=100)
    needed = {"requests_needed": st.one_of(st.none(), count), "seconds_needed": st.one_of(st.none(), number(1))}
    RATE = {
        "count": count,
        "count_max": count,
        "requests": count,
        "observed_percent": percent,
        "lower_percent": percent,
        "upper_percent": percent,
    }
    SLOW = {
        "latency_ms": number(t["max_p99_latency_ms"], t["min_p99_ms_for_ratio"], high=2000),
        "source": st.one_of(st.sampled_from(["histogram", "quantiles"]), WRONG),
        "bucket_ms": st.one_of(st.lists(number(t["max_p99_latency_ms"], high=2000), max_size=2), WRONG),
    }
    ERROR_RATE = {**RATE, **needed}
    P99_LATENCY = {**RATE, **needed, **SLOW}
    ERROR_RATE_VS_STABLE = {
        "canary_errors": count,
        "canary_requests": count,
        "stable_errors": count,
        "stable_requests": count,
        "observed_ratio": st.one_of(st.none(), ratio),
        "lower_ratio": ratio,
    }
    P99_VS_STABLE = {
        **RATE,
        **SLOW,
        "stable_p99_ms": number(t["max_p99_latency_ms"], high=2000),
        "stable_requests": count,
    }
    echo = {name: t[name] for name in EVIDENCE_THRESHOLDS}
    EVIDENCE = {
        "method": st.one_of(st.sampled_from(["fixed", "sequential"]), WRONG),
        "thresholds": st.one_of(st.just(echo), st.just(echo), record({k: number(v) for k, v in echo.items()})),
        "error_rate": st.one_of(record(ERROR_RATE), ANY_JSON),
        "p99_latency": st.one_of(record(P99_LATENCY), ANY_JSON),
        "error_rate_vs_stable": st.one_of(st.none(), record(ERROR_RATE_VS_STABLE), ANY_JSON),
        "p99_vs_stable": st.one_of(st.none(), record(P99_VS_STABLE), ANY_JSON),
        "canary_requests_per_second": number(1, high=500),
        **needed,
    }

    @st.composite
    def with_real_evidence(draw: st.DrawFn) -> dict[str, Any]:
        """Consistent tracks with the evidence swiftdeploy computes from them (a fixed window or a look of the
        watch), then the bounds the rules compare moved to, just under or just over their thresholds: the inputs
        that reach every deny, allow and inconclusive rule."""
        canary = draw(consistent_track())
        stable = draw(st.one_of(st.none(), consistent_track()))
        method = draw(st.sampled_from(["fixed", "sequential"]))
        seconds = draw(st.sampled_from([30, 1, 12.5, 600]))
        try:
            ev = evidence(canary, stable, seconds, t, method=method)
        except EvidenceError:
            return {"window_seconds": seconds, "canary": canary, "stable": stable, "evidence": draw(ANY_JSON)}
        edges = {
            ("error_rate", "lower_percent"): around(t["max_error_rate_percent"]),
            ("error_rate", "upper_percent"): around(t["bad_error_rate_percent"]),
            ("p99_latency", "lower_percent"): around(t["max_slow_percent"]),
            ("p99_latency", "upper_percent"): around(t["bad_slow_percent"]),
            ("p99_vs_stable", "lower_percent"): around(t["max_slow_percent"]),
            ("error_rate_vs_stable", "lower_ratio"): around(t["max_error_rate_ratio"]),
        }
        for (part, name), strategy in edges.items():
            if isinstance(ev.get(part), dict) and draw(st.booleans()):
                ev[part][name] = min(100.0, max(0.0, draw(strategy)))
        return {"window_seconds": seconds, "canary": canary, "stable": stable, "evidence": ev}

    track = st.one_of(consistent_track(), consistent_track(), record(TRACK), ANY_JSON)
    CANARY = {
        "window_seconds": number(30, 1, high=600),
        "canary": track,
        "stable": st.one_of(st.none(), track),
        "evidence": st.one_of(record(EVIDENCE), record(EVIDENCE, required=1.0), ANY_JSON),
    }
    return st.one_of(
        record(CANARY), record(CANARY, required=1.0), with_real_evidence(), with_real_evidence(), not_an_object()
    )


# --- the comparison ----------------------------------------------------------------------------------------------


def comparable(engine: Any, domain: str, value: Any) -> tuple[Any, ...]:
    """What must be identical: allow, verdict and the set of violations (a refused input: the error's class)."""
    try:
        d = engine.evaluate(domain, value)
    except PolicyError as exc:
        return ("refused", type(exc).__name__)
    violations = sorted((v.rule, v.field or "", _exact(v.observed), _exact(v.threshold), v.unit) for v in d.violations)
    return (d.allow, d.verdict, tuple(violations))


def _exact(value: Any) -> Any:
    """A value compared exactly: numbers by their exact decimal value (0 and 0.0 are the same number, a big
    integer and its float approximation are not), never a boolean as a number; containers element by element."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", Decimal(value) if isinstance(value, int) else Decimal(repr(value)))
    if isinstance(value, list):
        return ("array", tuple(_exact(v) for v in value))
    return ("object", tuple(sorted((k, _exact(v)) for k, v in value.items())))


@pytest.fixture(scope="module")
def engines(opa_binary, tmp_path_factory):
    """(manifest thresholds, embedded engine, OPA engine, counter) on the real OPA service of one manifest."""
    from support import free_port

    from swiftdeploy import generate
    from swiftdeploy.manifest import load_manifest
    from swiftdeploy.runtime.local import LocalRuntime

    folder = tmp_path_factory.mktemp("differential")
    path = folder / "manifest.yaml"
    path.write_text(
        "services: {image: swift-deploy-1-node:latest, port: 3000}\nruntime: local\n"
        f"opa: {{port: {free_port()}, binary: {opa_binary}, timeout: 5}}\n" + OVERRIDES
    )
    m = load_manifest(path)
    generate.write(m)
    runtime = LocalRuntime()
    runtime.start_policy_engine(m, timeout=30)
    policy_set = load_policy_set(m)
    opa = OpaEngine(opa_url(m.opa.port), timeout=m.opa.timeout, expect_revision=expected_revision(m))
    try:
        yield policy_set.thresholds, EmbeddedEngine(policy_set), opa
    finally:
        opa.close()
        runtime.down(m)


def differential(domain: str, inputs: st.SearchStrategy[Any]):
    counted: list[int] = []

    @settings(max_examples=INPUTS, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(value=inputs)
    def check(engines, value: Any) -> None:
        _, embedded, opa = engines
        counted.append(1)
        ours, theirs = comparable(embedded, domain, value), comparable(opa, domain, value)
        assert ours == theirs, f"embedded and OPA disagree on {domain} input {value!r}"

    def run(engines) -> None:
        check(engines)
        assert len(counted) >= INPUTS, f"only {len(counted)} {domain} inputs were compared"
        print(f"differential {domain}: {len(counted)} inputs, embedded and OPA agreed on every one")

    return run


def test_the_engines_agree_on_infrastructure_inputs(engines) -> None:
    thresholds = engines[0]
    assert thresholds["max_cpu_load"] == 3.5  # the manifest's override reached both engines
    differential("infrastructure", infrastructure_inputs(thresholds))(engines)


def test_the_engines_agree_on_canary_inputs(engines) -> None:
    thresholds = engines[0]
    assert thresholds["min_requests"] == 30
    differential("canary", canary_inputs(thresholds))(engines)
