"""`python -m demo_api` as a real process on 127.0.0.1: start-up, HTTP, metrics windows, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

START_TIMEOUT = 20.0  # bound on waiting for /healthz; a healthy start takes well under a second
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MODE", "APP_VERSION", "APP_PORT", "APP_HOST"}}
    env.pop("METRICS_ENABLED", None)
    return env | overrides


@dataclass
class RunningApi:
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> int:
        """SIGTERM, wait, SIGKILL as a fallback; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        return self.proc.returncode


def _start(tmp_path: Path, mode: str, version: str) -> RunningApi:
    port = free_port()
    log = tmp_path / f"demo_api-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "demo_api"],
            env=api_env(MODE=mode, APP_VERSION=version, APP_PORT=str(port), APP_HOST="127.0.0.1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = RunningApi(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo_api exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{api.url}/healthz", timeout=1.0).status_code == 200:
                return api
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    api.stop()
    raise AssertionError(f"demo_api not healthy within {START_TIMEOUT} s:\n{log.read_text()}")


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., RunningApi]]:
    started: list[RunningApi] = []

    def start(mode: str = "stable", version: str = "1.0.0") -> RunningApi:
        api = _start(tmp_path, mode, version)
        started.append(api)
        return api

    try:
        yield start
    finally:
        for api in started:
            api.stop()


def test_serves_over_real_http_and_stops_cleanly(start_api) -> None:
    api = start_api(mode="stable", version="3.1.4")
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
    env = api_env(APP_PORT="1", APP_HOST="127.0.0.1") | {variable: bad}
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


def test_slow_chaos_window_puts_p99_above_half_a_second_and_recovery_brings_it_back(start_api, prom) -> None:
    api = start_api(mode="canary", version="2.0.0")
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
