"""`python -m demo_api` as a real process on 127.0.0.1: start-up, HTTP, metrics windows, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import httpx
import psutil
import pytest
from support import demo_api_env


def test_serves_over_real_http_and_stops_cleanly(demo_api) -> None:
    api = demo_api(mode="stable", version="3.1.4")
    with httpx.Client(base_url=api.url, timeout=5.0) as client:
        index = client.get("/")
        health = client.get("/healthz")
        refused = client.post("/chaos", json={"mode": "error", "rate": 1.0})
        metrics = client.get("/metrics")
    assert index.status_code == 200 and index.json()["mode"] == "stable" and index.json()["version"] == "3.1.4"
    assert health.json()["status"] == "ok"
    assert refused.status_code == 403 and refused.headers["x-mode"] == "stable"
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{method="GET",path="/",status_code="200"} 1.0' in metrics.text

    process = psutil.Process(api.proc.pid)
    children = process.children(recursive=True)
    # uvicorn drains and shuts down, then re-raises SIGTERM so the parent sees how it ended (143 in Docker).
    assert api.stop() == -signal.SIGTERM
    log = api.log.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
    assert not process.is_running()
    assert not [child for child in children if child.is_running()]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{api.url}/healthz", timeout=1.0)


@pytest.mark.parametrize(
    ("variable", "bad", "allowed"),
    [("MODE", "purple", "stable or canary"), ("APP_PORT", "eighty", "1 to 65535")],
)
def test_bad_setting_exits_2_with_one_line(variable: str, bad: str, allowed: str) -> None:
    env = demo_api_env(APP_PORT="1", APP_HOST="127.0.0.1") | {variable: bad}
    done = subprocess.run(
        [sys.executable, "-m", "demo_api"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and repr(bad) in lines[0] and allowed in lines[0]
    assert "Traceback" not in done.stderr


def _scrape(client: httpx.Client, prom):
    response = client.get("/metrics")
    assert response.status_code == 200
    return prom.parse(response.text)


def _bucket_delta(prom, before, after, le: str) -> float:
    name = "http_request_duration_seconds_bucket"
    labels = {"method": "GET", "path": "/", "le": le}
    return prom.value(after, name, **labels) - prom.value(before, name, **labels)


async def _concurrent_gets(url: str, count: int) -> list[int]:
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:

        async def one() -> None:
            statuses.append((await client.get("/")).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)
    return statuses


def test_slow_chaos_window_puts_p99_above_half_a_second_and_recovery_brings_it_back(demo_api, prom) -> None:
    api = demo_api(mode="canary", version="2.0.0")
    with httpx.Client(base_url=api.url, timeout=10.0) as client:
        client.get("/")  # the series exists before the first window
        before_slow = _scrape(client, prom)
        assert client.post("/chaos", json={"mode": "slow", "duration": 0.6}).status_code == 200
        assert anyio.run(_concurrent_gets, api.url, 6) == [200] * 6
        after_slow = _scrape(client, prom)
        assert prom.value(after_slow, "chaos_active") == 1

        # Window 1: 6 new requests, none at or below 0.5 s, so any quantile (P99 included) is >= 0.5 s.
        assert _bucket_delta(prom, before_slow, after_slow, "+Inf") == 6
        assert _bucket_delta(prom, before_slow, after_slow, "0.5") == 0

        assert client.post("/chaos", json={"mode": "recover"}).status_code == 200
        before_recovered = _scrape(client, prom)
        assert anyio.run(_concurrent_gets, api.url, 6) == [200] * 6
        after_recovered = _scrape(client, prom)

    # Window 2: all 6 requests land at or below 0.5 s, so the window's P99 falls back below the threshold.
    assert _bucket_delta(prom, before_recovered, after_recovered, "+Inf") == 6
    assert _bucket_delta(prom, before_recovered, after_recovered, "0.5") == 6
    assert prom.value(after_recovered, "chaos_active") == 0
