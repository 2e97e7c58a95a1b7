"""The evidence swiftdeploy computes for the canary policy: slow-request counts from the histogram, bounds, the
relative parts, the "requests needed" estimate, and deriving it for today's TRACK shape."""

from __future__ import annotations

import pytest

from swiftdeploy import stats
from swiftdeploy.judge import EvidenceError, Track, canary_facts, evidence, thresholds_of, with_evidence
from swiftdeploy.metrics import parse, window
from swiftdeploy.policy import evaluate

TH = thresholds_of(None)


def track(requests: int = 600, errors: int = 0, **extra) -> dict:
    base = {
        "requests": requests,
        "errors": errors,
        "error_rate_percent": 100 * errors / requests if requests else 0.0,
        "p50_ms": 20.0 if requests else None,
        "p99_ms": 100.0 if requests else None,
    }
    return {**base, **extra}


def test_slow_requests_are_counted_at_the_histogram_bound() -> None:
    t = Track.read(track(slower_than_ms={"250": 30, "400": 12, "500": 7, "600": 2}))
    exact = t.slower_than(500)
    assert (exact.at_least, exact.at_most, exact.buckets, exact.source) == (7, 7, (500, 500), "histogram")
    # between two bounds: at least those above the next bound up, at most those above the next bound down
    between = t.slower_than(450)
    assert (between.at_least, between.at_most, between.buckets) == (7, 12, (400, 500))
    assert t.slower_than(1000).at_least == 0 and t.slower_than(1000).at_most == 2
    assert t.slower_than(100).at_least == 30 and t.slower_than(100).at_most == 600


def test_only_p50_and_p99_known_give_a_coarse_interval() -> None:
    # P99 <= 500: at most 1 % slower; P99 > 500 but P50 <= 500: between 1 % and 50 %; P50 > 500: at least half
    fast = Track.read(track(p99_ms=500.0)).slower_than(500)
    assert (fast.at_least, fast.at_most, fast.source) == (0, 6, "quantiles")
    tail = Track.read(track(p99_ms=700.0)).slower_than(500)
    assert (tail.at_least, tail.at_most) == (6, 300)
    slow = Track.read(track(p50_ms=600.0, p99_ms=700.0)).slower_than(500)
    assert (slow.at_least, slow.at_most) == (300, 600)


def test_p99_above_the_threshold_is_more_than_one_percent_slower(exposition) -> None:
    """The rule: "P99 > 500 ms" is "more than 1 % of the requests slower than 500 ms" - the window's P99 and the
    slow count the gate uses agree at the boundary, from the same histogram."""
    before = parse("t", exposition(0))
    for slow, p99_above in [(10, False), (11, True)]:  # 1000 requests: 1.0 % vs 1.1 % slower than 500 ms
        after = parse("t", exposition(1000, latencies_ms=[20.0] * (1000 - slow) + [700.0] * slow))
        w = window(before, after)
        assert w.slower_than_ms()["500"] == slow
        assert (w.p99_ms > 500) is p99_above


def test_the_gate_judges_the_slow_share_not_the_p99_of_a_few_samples(exposition) -> None:
    """60 requests, one of them slow: the P99 is that one request (600+ ms) and a point comparison would deny;
    one slow request in 60 shows nothing with confidence, so the honest verdict is inconclusive."""
    before = parse("t", exposition(0))
    after = parse("t", exposition(60, latencies_ms=[20.0] * 59 + [650.0]))
    w = window(before, after)
    assert w.p99_ms is not None and w.p99_ms > 500
    d = evaluate(None, "canary", {"window_seconds": 30, "canary": w.to_input(), "stable": None})
    assert d.verdict == "inconclusive"
    # with 100 000 requests the same question has clear answers either side of 1 %
    for share, verdict in [(0.012, "deny"), (0.008, "allow")]:
        slow = round(share * 100_000)
        facts = {"window_seconds": 300, "canary": track(100_000, slower_than_ms={"500": slow}), "stable": None}
        assert evaluate(None, "canary", facts).verdict == verdict, share


def test_evidence_of_a_clean_window() -> None:
    ev = evidence(track(), None, 30, TH)
    assert ev["method"] == "fixed"
    assert ev["error_rate"] == {
        "count": 0,
        "count_max": 0,
        "requests": 600,
        "observed_percent": 0.0,
        "lower_percent": 0.0,
        "upper_percent": pytest.approx(100 * stats.cp_upper(0, 600, 0.05)),
        "requests_needed": 0,
        "seconds_needed": 0.0,
    }
    assert ev["error_rate_vs_stable"] is None and ev["p99_vs_stable"] is None
    assert ev["canary_requests_per_second"] == 20.0
    assert ev["thresholds"] == {k: TH[k] for k in ev["thresholds"]}


def test_evidence_against_stable() -> None:
    ev = evidence(track(errors=7), track(5400, 10, p99_ms=200.0), 30, TH)
    ratio = ev["error_rate_vs_stable"]
    assert ratio["observed_ratio"] == pytest.approx((7 / 600) / (10 / 5400))
    assert ratio["lower_ratio"] == pytest.approx(stats.ratio_lower(7, 600, 10, 5400, 0.04))  # 96 % confidence
    # the relative latency rule counts at 2 x stable's P99 (400 ms), never below min_p99_ms_for_ratio (250 ms)
    assert ev["p99_vs_stable"]["latency_ms"] == 400.0
    assert evidence(track(), track(5400, p99_ms=100.0), 30, TH)["p99_vs_stable"]["latency_ms"] == 250.0


def test_sequential_evidence_is_wider() -> None:
    fixed = evidence(track(errors=8), None, 30, TH)
    sequential = evidence(track(errors=8), None, 30, TH, method="sequential")
    assert sequential["error_rate"]["lower_percent"] < fixed["error_rate"]["lower_percent"]
    assert sequential["error_rate"]["upper_percent"] > fixed["error_rate"]["upper_percent"]
    assert sequential["error_rate"]["requests_needed"] > fixed["error_rate"]["requests_needed"]


def test_requests_needed_follows_the_rate_seen() -> None:
    few = evidence(track(60), None, 30, TH)  # 2 canary requests per second, none failing
    assert few["error_rate"]["requests_needed"] == 149 - 60
    assert few["seconds_needed"] == pytest.approx(89 / 2)
    bad = evidence(track(150, 5), None, 30, TH)  # 3.3 % seen: no amount of data would show < 2 %
    assert bad["error_rate"]["requests_needed"] is None and bad["requests_needed"] is None


def test_with_evidence_derives_only_what_is_missing() -> None:
    data = {"window_seconds": 30, "canary": track(), "stable": None}
    derived = with_evidence(data, TH)
    assert derived["evidence"] == evidence(track(), None, 30, TH) and "evidence" not in data
    given = {**data, "evidence": {"method": "fixed"}}
    assert with_evidence(given, TH) is given  # sent evidence is the policy's to check, not ours to replace
    for broken in [
        {**data, "canary": {**track(), "requests": "600"}},
        {**data, "canary": {**track(), "requests": 600.5}},
        {**data, "canary": {**track(), "errors": 601}},
        {**data, "window_seconds": 0},
        {"window_seconds": 30, "canary": track()},
        [data],
    ]:
        assert with_evidence(broken, TH) == broken


def test_malformed_tracks_and_thresholds_are_refused() -> None:
    with pytest.raises(EvidenceError, match="slower_than_ms"):
        evidence(track(slower_than_ms={"500": 700}), None, 30, TH)
    with pytest.raises(EvidenceError, match="deny_confidence_percent"):
        evidence(track(), None, 30, {**TH, "deny_confidence_percent": 100})
    with pytest.raises(EvidenceError, match="max_p99_latency_ms"):
        evidence(track(), None, 30, {**TH, "max_p99_latency_ms": "500"})


def test_canary_facts_is_todays_input_plus_evidence() -> None:
    clean = {"slower_than_ms": {"500": 0}}
    facts = canary_facts(track(**clean), track(5400, **clean), 30, TH, method="sequential")
    assert set(facts) == {"window_seconds", "canary", "stable", "evidence"}
    assert facts["evidence"]["method"] == "sequential"
    assert evaluate(None, "canary", facts).verdict == "allow"
