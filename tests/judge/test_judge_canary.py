"""`swiftdeploy.judge_canary` (one window, as the library entry point) and the watch behind `promote stable`
(it looks at every scrape and stops at the first clear verdict), over Prometheus text the demo API renders."""

from __future__ import annotations

import httpx
import pytest

import swiftdeploy
from swiftdeploy.errors import InvalidInput
from swiftdeploy.judge import WatchProgress, canary_facts, judge_canary, thresholds_of, watch, watch_canary
from swiftdeploy.metrics import parse, window
from swiftdeploy.policy import evaluate


def test_judge_canary_is_the_library_entry_point() -> None:
    assert swiftdeploy.judge_canary is judge_canary


def test_a_clean_canary_is_allowed_and_says_why(exposition) -> None:
    before = {"canary": exposition(1000), "stable": exposition(9000)}
    after = {"canary": exposition(1612, latencies_ms=[20.0] * 612), "stable": exposition(14400, 4)}
    d = judge_canary(before, after, seconds=30)
    assert (d.verdict, d.allow, d.violations) == ("allow", True, [])
    assert d.evidence is not None and d.evidence["error_rate"]["requests"] == 612
    [errors] = [b for b in d.basis if b.rule == "error_rate"]
    assert errors.message.startswith("612 canary requests, 0 errors over 30 s: error rate below 0.488% with 95%")
    assert errors.counts == {"errors": 0, "requests": 612} and errors.bound == pytest.approx(0.48830, abs=1e-5)


def test_a_failing_canary_is_denied_with_every_number(exposition) -> None:
    before = {"canary": exposition(0), "stable": exposition(0)}
    after = {"canary": exposition(140, 10), "stable": exposition(1347, 3)}
    d = judge_canary(before, after, seconds=30)
    assert d.verdict == "deny"
    by_rule = {v.rule: v for v in d.violations}
    assert set(by_rule) == {"error_rate", "error_rate_vs_stable"}
    v = by_rule["error_rate"]
    assert (v.observed, v.threshold, v.bound_kind, v.confidence_percent) == (6.667, 1, "lower", 99.5)  # as the window
    assert v.counts == {"errors": 10, "requests": 150} and v.extra["window_seconds"] == 30


def test_a_slow_canary_is_denied_from_the_histogram(exposition) -> None:
    before = {"canary": exposition(0)}
    after = {"canary": exposition(20, latencies_ms=[600.0] * 20)}  # chaos slow 0.6 s, no stable baseline
    d = judge_canary(before, after, seconds=10)
    assert d.verdict == "deny" and {v.rule for v in d.violations} == {"p99_latency"}
    assert d.violations[0].counts == {"slow": 20, "slow_max": 20, "requests": 20}


def test_judge_canary_decides_like_the_gate_on_the_same_facts(exposition) -> None:
    """The same window, evidence and embedded policy as `promote stable`: the decision equals evaluating the facts
    built from the two scrapes."""
    before = {"canary": exposition(0), "stable": exposition(0)}
    after = {"canary": exposition(57, 3), "stable": exposition(540)}
    tracks = {t: window(parse(t, before[t]), parse(t, after[t])).to_input() for t in before}
    facts = canary_facts(tracks["canary"], tracks["stable"], 30.0, thresholds_of(None))
    assert judge_canary(before, after, seconds=30) == evaluate(None, "canary", facts)
    sequential = judge_canary(before, after, seconds=30, method="sequential")
    assert sequential.evidence["method"] == "sequential"


def test_judge_canary_takes_thresholds_from_the_manifest(exposition, write_manifest) -> None:
    before, after = {"canary": exposition(0)}, {"canary": exposition(150)}
    assert judge_canary(before, after, seconds=30).verdict == "allow"
    strict = write_manifest("{bad_error_rate_percent: 1}")  # 150 clean requests do not show < 1 %
    d = judge_canary(before, after, seconds=30, manifest=strict)
    assert d.verdict == "inconclusive" and "error_rate_unproven" in {v.rule for v in d.violations}


@pytest.mark.parametrize(
    ("before", "after", "seconds", "error"),
    [
        ({"stable": "x"}, {"stable": "x"}, 30, "canary"),
        ({"canary": "x", "stable": "x"}, {"canary": "x"}, 30, "stable"),
        ({"canary": "x"}, {"canary": "x"}, 0, "seconds"),
    ],
)
def test_judge_canary_refuses_bad_arguments(before, after, seconds, error) -> None:
    with pytest.raises(InvalidInput, match=error):
        judge_canary(before, after, seconds=seconds)


class Stack:
    """Two tracks whose counters grow by `rate` requests per second of a fake clock; `errors`/`slow` are the shares
    of canary requests that fail / take 600 ms. Scrapes are parsed exactly as real ones."""

    def __init__(self, exposition, canary_rate: float, errors: float = 0.0, slow: float = 0.0) -> None:
        self.render, self.rate, self.errors, self.slow = exposition, canary_rate, errors, slow
        self.now = 1000.0
        self.scrapes = 0
        self.naps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds

    def scrape(self) -> dict:
        self.scrapes += 1
        t = self.now - 1000.0
        n = round(self.rate * t)
        bad, slow = round(self.errors * n), round(self.slow * n)
        canary = self.render(n - bad, bad, latencies_ms=[20.0] * (n - slow) + [600.0] * slow)
        stable = self.render(round(9 * self.rate * t), latencies_ms=[20.0] * round(9 * self.rate * t))
        return {"canary": parse("canary", canary, at=self.now), "stable": parse("stable", stable, at=self.now)}


def run_watch(stack: Stack, max_seconds: float = 120.0, progress=None):
    return watch(
        stack.scrape,
        lambda facts: evaluate(None, "canary", facts),
        thresholds_of(None),
        max_seconds,
        interval=1.0,
        progress=progress,
        sleep=stack.sleep,
        clock=stack.clock,
    )


def test_the_watch_denies_a_failing_canary_within_seconds(exposition) -> None:
    stack = Stack(exposition, canary_rate=2.0, errors=1.0)  # 20 req/s total, every canary request fails
    look = run_watch(stack)
    assert look.decision.verdict == "deny" and look.elapsed <= 2.0
    assert look.facts["evidence"]["method"] == "sequential"


def test_the_watch_allows_a_healthy_canary_once_enough_clean_requests_were_seen(exposition) -> None:
    stack = Stack(exposition, canary_rate=20.0)  # 200 req/s total
    seen: list[str] = []
    look = run_watch(stack, progress=seen.append)
    assert look.decision.verdict == "allow"
    # the first look at which the confidence sequence clears 2 % (0 errors, 0 slow), not the 120 s maximum
    assert 10.0 <= look.elapsed <= 15.0
    assert stack.scrapes == round(look.elapsed) + 1 and all(nap <= 1.0 for nap in stack.naps)
    assert all(isinstance(line, WatchProgress) and line.transient for line in seen)
    assert "canary requests" in seen[0] and "more requests needed" in seen[0] and seen[-1].endswith("allow")


def test_the_watch_is_inconclusive_after_its_maximum_and_says_what_is_missing(exposition) -> None:
    stack = Stack(exposition, canary_rate=0.5)  # 5 req/s total: 10 canary requests in 20 s
    look = run_watch(stack, max_seconds=20.0)
    assert look.decision.verdict == "inconclusive" and look.elapsed == pytest.approx(20.0)
    assert stack.scrapes == 21
    [unproven] = [v for v in look.decision.violations if v.rule == "error_rate_unproven"]
    assert unproven.extra["requests_needed"] > 100 and unproven.extra["seconds_needed"] > 200
    assert "more canary requests would settle it" in unproven.message


def test_watch_canary_scrapes_both_tracks_through_the_admin_listener(exposition, write_manifest) -> None:
    """The watch on a manifest: every look scrapes /canary/metrics and /stable/metrics on the admin listener and
    it stops at the first clear verdict (a canary failing every request: the second look)."""
    m = write_manifest(admin_port=18082)
    counts = {"canary": 0, "stable": 0}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        track = request.url.path.split("/")[1]
        counts[track] += 1
        n = 5 * (counts[track] - 1)
        text = exposition(0, n) if track == "canary" else exposition(10 * n)
        return httpx.Response(200, text=text)

    lines: list[str] = []
    facts = watch_canary(m, 60, sleep=lambda s: None, progress=lines.append, transport=httpx.MockTransport(handler))
    assert sorted(set(seen)) == ["http://127.0.0.1:18082/canary/metrics", "http://127.0.0.1:18082/stable/metrics"]
    assert counts["canary"] <= 3
    assert evaluate(m, "canary", facts).verdict == "deny"
    assert lines[-1].startswith("watched the canary: ") and lines[-1].endswith(", deny")
    assert not getattr(lines[-1], "transient", False)  # the final line stays on screen
