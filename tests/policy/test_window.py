"""Window math against hand-computed fixtures: deltas, exclusions, PromQL histogram_quantile, counter resets."""

from __future__ import annotations

import math

import httpx
import pytest

from swiftdeploy.errors import OperationFailed
from swiftdeploy.metrics import canary_input, histogram_quantile, parse, scrape, window
from swiftdeploy.policy import evaluate

LE = ("0.1", "0.25", "0.5", "1.0", "+Inf")


def exposition(
    counts: dict[tuple[str, str], float],
    buckets: dict[str, list[float]],
    uptime: float | None = 100.0,
) -> str:
    """Prometheus text: counts {(path, status): n}, buckets {path: cumulative counts per LE}."""
    lines = ["# TYPE http_requests_total counter"]
    for (path, status), n in counts.items():
        method = "POST" if path == "/chaos" else "GET"
        lines.append(f'http_requests_total{{method="{method}",path="{path}",status_code="{status}"}} {n}')
    lines.append("# TYPE http_request_duration_seconds histogram")
    for path, cumulative in buckets.items():
        for le, n in zip(LE, cumulative, strict=True):
            lines.append(f'http_request_duration_seconds_bucket{{le="{le}",method="GET",path="{path}"}} {n}')
        lines.append(f'http_request_duration_seconds_count{{method="GET",path="{path}"}} {cumulative[-1]}')
        lines.append(f'http_request_duration_seconds_sum{{method="GET",path="{path}"}} 1.0')
    if uptime is not None:
        lines += ["# TYPE app_uptime_seconds gauge", f"app_uptime_seconds {uptime}"]
    lines += ["# TYPE app_mode gauge", "app_mode 1", "# TYPE chaos_active gauge", "chaos_active 0"]
    return "\n".join(lines) + "\n"


BEFORE = exposition(
    {("/", "200"): 100, ("/", "500"): 0, ("/healthz", "200"): 1000, ("/chaos", "200"): 1},
    {"/": [80, 95, 100, 100, 100], "/healthz": [1000] * 5},
)
# 100 new requests on "/": 90 ok + 10 errors; bucket deltas 50, 70, 95, 100, 100. Probes and chaos calls moved too
# and must not count.
AFTER = exposition(
    {("/", "200"): 190, ("/", "500"): 10, ("/healthz", "200"): 1500, ("/chaos", "200"): 5},
    {"/": [130, 165, 195, 200, 200], "/healthz": [1500] * 5},
    uptime=130.0,
)


def test_window_counts_only_application_traffic() -> None:
    w = window(parse("u", BEFORE, at=10.0), parse("u", AFTER, at=40.0))
    assert (w.requests, w.errors, w.error_rate_percent) == (100, 10, 10.0)
    assert w.seconds == 30.0 and not w.restarted
    # p50: rank 50 lands exactly on the top of the first bucket (lower bound 0): 0 + 0.1 * 50/50
    assert w.p50_ms == pytest.approx(100.0)
    # p99: rank 99 in (0.5, 1.0] holding 5 observations, 4 of them needed: 0.5 + 0.5 * 4/5 = 0.9 s
    assert w.p99_ms == pytest.approx(900.0)
    assert w.to_input() == {
        "requests": 100,
        "errors": 10,
        "error_rate_percent": 10.0,
        "p50_ms": 100.0,
        "p99_ms": 900.0,
        # requests slower than each finite bound: 100 - 50, 100 - 70, 100 - 95, 100 - 100
        "slower_than_ms": {"100": 50, "250": 30, "500": 5, "1000": 0},
    }


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = {0.1: 50.0, 0.25: 70.0, 0.5: 90.0, 1.0: 98.0, math.inf: 100.0}
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # first bucket from 0: 0.1 * 25/50
    assert histogram_quantile(0.8, buckets) == pytest.approx(0.375)  # 0.25 + 0.25 * (80-70)/(90-70)
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.99, buckets) == 1.0  # falls in +Inf: the highest finite bound
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None
    # non-monotonic buckets (a scrape race) are repaired the PromQL way, never a negative bucket count
    assert histogram_quantile(0.5, {0.1: 10.0, 0.25: 8.0, math.inf: 20.0}) == pytest.approx(0.1 + 0.15 * 0 / 10)


def test_counter_reset_counts_from_zero() -> None:
    """The track restarted inside the window: counters went down, so the new values are the deltas."""
    restarted = exposition(
        {("/", "200"): 27, ("/", "500"): 3, ("/healthz", "200"): 4},
        {"/": [10, 20, 28, 30, 30], "/healthz": [4] * 5},
        uptime=12.0,
    )
    w = window(parse("u", AFTER, at=0.0), parse("u", restarted, at=30.0))
    assert (w.requests, w.errors, w.error_rate_percent, w.restarted) == (30, 3, 10.0, True)
    # p99: rank 29.7 in (0.5, 1.0] holding 2: 0.5 + 0.5 * 1.7/2
    assert w.p99_ms == pytest.approx(925.0)


def test_counter_reset_without_uptime_gauge_is_detected_per_series() -> None:
    before = exposition({("/", "200"): 500}, {"/": [500] * 5}, uptime=None)
    after = exposition({("/", "200"): 40, ("/", "503"): 2}, {"/": [42] * 5}, uptime=None)
    w = window(parse("u", before), parse("u", after))
    assert (w.requests, w.errors, w.restarted) == (42, 2, True)


def test_empty_window_is_zero_requests_and_inconclusive() -> None:
    w = window(parse("u", BEFORE, at=0.0), parse("u", BEFORE, at=30.0))
    assert (w.requests, w.errors, w.error_rate_percent, w.p50_ms, w.p99_ms) == (0, 0, 0.0, None, None)
    d = evaluate(None, "canary", {"window_seconds": 30, "canary": w.to_input(), "stable": w.to_input()})
    assert d.verdict == "inconclusive"
    assert [v.rule for v in d.violations] == ["error_rate_unproven", "min_requests", "p99_latency_unproven"]


def test_all_slow_requests_beyond_the_last_bucket() -> None:
    before = exposition({("/", "200"): 0}, {"/": [0, 0, 0, 0, 0]})
    after = exposition({("/", "200"): 25}, {"/": [0, 0, 0, 0, 25]})
    w = window(parse("u", before), parse("u", after))
    assert (w.p50_ms, w.p99_ms) == (1000.0, 1000.0)


def metrics_server(texts: dict[str, list[str]], seen: list[str]) -> httpx.MockTransport:
    """Serves /<track>/metrics answers in order (the first scrape, then the second)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        track = request.url.path.split("/")[1]
        return httpx.Response(200, text=texts[track].pop(0))

    return httpx.MockTransport(handler)


def test_canary_input_scrapes_both_tracks_through_the_admin_listener(write_manifest) -> None:
    m = write_manifest(admin_port=18081)
    seen: list[str] = []
    transport = metrics_server({"canary": [BEFORE, AFTER], "stable": [BEFORE, BEFORE]}, seen)
    naps: list[float] = []
    data = canary_input(m, 30, sleep=naps.append, transport=transport)
    assert naps == [30]
    assert sorted(set(seen)) == ["http://127.0.0.1:18081/canary/metrics", "http://127.0.0.1:18081/stable/metrics"]
    assert data["canary"]["requests"] == 100 and data["canary"]["p99_ms"] == pytest.approx(900.0)
    assert data["stable"]["requests"] == 0 and data["stable"]["p99_ms"] is None
    assert data["window_seconds"] > 0
    assert evaluate(m, "canary", data).verdict == "deny"  # 10 % errors, 900 ms


def test_scrape_failures_name_the_url() -> None:
    url = "http://127.0.0.1:9/canary/metrics"
    refused = httpx.MockTransport(lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")))
    with pytest.raises(OperationFailed, match="cannot scrape http://127.0.0.1:9/canary/metrics"):
        scrape(url, transport=refused)
    down = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": "no canary running"}))
    with pytest.raises(OperationFailed, match="answered HTTP 503.*no canary running"):
        scrape(url, transport=down)
    garbage = httpx.MockTransport(lambda r: httpx.Response(200, text="this is { not prometheus\n"))
    with pytest.raises(OperationFailed, match="not Prometheus text format"):
        scrape(url, transport=garbage)
