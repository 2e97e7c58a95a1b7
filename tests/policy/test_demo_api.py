"""Window math against the real demo API over real HTTP on 127.0.0.1: slow chaos 0.6 s -> P99 > 500 ms -> deny."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support import DemoApi

from swiftdeploy.metrics import scrape, window
from swiftdeploy.policy import evaluate

REQUESTS = 6  # bounded: 6 slow requests, all at once


@pytest.fixture(scope="module")
def canary_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `python -m demo_api` in canary mode for this module; always stopped."""
    api = DemoApi(tmp_path_factory.mktemp("demo_api"), "canary", "2.0.0")
    try:
        yield api.url
    finally:
        api.stop()


@pytest.fixture
def api(canary_api: str) -> Iterator[str]:
    """The shared demo API, recovered from any chaos after each test."""
    try:
        yield canary_api
    finally:
        httpx.post(f"{canary_api}/chaos", json={"mode": "recover"}, timeout=5.0)


def burst(url: str, n: int) -> list[int]:
    with httpx.Client(timeout=10.0) as client, ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: client.get(f"{url}/").status_code, range(n)))


def test_slow_chaos_makes_the_canary_gate_deny(api: str) -> None:
    answer = httpx.post(f"{api}/chaos", json={"mode": "slow", "duration": 0.6}, timeout=5.0)
    assert answer.status_code == 200, answer.text
    before = scrape(f"{api}/metrics")
    assert burst(api, REQUESTS) == [200] * REQUESTS
    for _ in range(3):  # probes do not count as traffic
        httpx.get(f"{api}/healthz", timeout=5.0)
    after = scrape(f"{api}/metrics")
    w = window(before, after)
    assert (w.requests, w.errors) == (REQUESTS, 0)
    assert w.p99_ms is not None and 600.0 <= w.p99_ms <= 750.0  # the (0.6, 0.75] bucket
    assert w.slower_than_ms()["500"] == REQUESTS and w.slower_than_ms()["600"] == REQUESTS
    d = evaluate(None, "canary", {"window_seconds": w.seconds, "canary": w.to_input(), "stable": None})
    assert d.verdict == "deny" and not d.allow
    # 6 of 6 requests slower than 500 ms (counted in the histogram): more than 1 % with 99 % confidence
    assert {v.rule for v in d.violations} == {"p99_latency"}
    assert d.evidence is not None and d.evidence["p99_latency"]["source"] == "histogram"
    assert (d.violations[0].counts["slow"], d.violations[0].counts["requests"]) == (REQUESTS, REQUESTS)


def test_error_chaos_shows_in_the_error_rate(api: str) -> None:
    assert httpx.post(f"{api}/chaos", json={"mode": "error", "rate": 1}, timeout=5.0).status_code == 200
    before = scrape(f"{api}/metrics")
    assert set(burst(api, REQUESTS)) == {500}
    w = window(before, scrape(f"{api}/metrics"))
    assert (w.requests, w.errors, w.error_rate_percent) == (REQUESTS, REQUESTS, 100.0)
    d = evaluate(None, "canary", {"window_seconds": 5, "canary": w.to_input(), "stable": None})
    assert "error_rate" in {v.rule for v in d.violations} and d.verdict == "deny"
