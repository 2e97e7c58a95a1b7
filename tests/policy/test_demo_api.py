"""Window math against the real demo API over real HTTP on 127.0.0.1: slow chaos 0.6 s -> P99 > 500 ms -> deny."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from swiftdeploy.metrics import scrape, window
from swiftdeploy.policy import evaluate

START_TIMEOUT = 20.0
REQUESTS = 6  # bounded: 6 slow requests, all at once


@pytest.fixture(scope="module")
def demo_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `python -m demo_api` in canary mode for this module; always stopped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp_path = tmp_path_factory.mktemp("demo_api")
    env = {k: v for k, v in os.environ.items() if k not in {"MODE", "APP_PORT", "APP_HOST", "METRICS_ENABLED"}}
    env |= {"MODE": "canary", "APP_PORT": str(port), "APP_HOST": "127.0.0.1", "APP_VERSION": "2.0.0"}
    log = tmp_path / "demo_api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "demo_api"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"demo_api exited with {proc.returncode}:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"demo_api not healthy in {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def api(demo_api: str) -> Iterator[str]:
    """The shared demo API, recovered from any chaos after each test."""
    try:
        yield demo_api
    finally:
        httpx.post(f"{demo_api}/chaos", json={"mode": "recover"}, timeout=5.0)


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
