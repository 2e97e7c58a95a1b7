"""The demo API in-process, over httpx's ASGI transport: endpoints, modes, headers, chaos and metric values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
import httpx
import pytest
from fastapi import FastAPI

from demo_api.app import create_app
from demo_api.config import ConfigError, Settings
from demo_api.metrics import DURATION_BUCKETS, UNMATCHED_PATH

pytestmark = pytest.mark.anyio

CANARY = Settings(mode="canary", version="2.0.0-rc.1")
STABLE = Settings(mode="stable", version="1.0.0")


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: the app itself must turn crashes into responses.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def scrape(client: httpx.AsyncClient, prom):
    response = await client.get("/metrics")
    assert response.status_code == 200
    return prom.parse(response.text)


@pytest.mark.parametrize("settings", [STABLE, CANARY], ids=["stable", "canary"])
async def test_index_and_healthz_report_mode_and_version(settings: Settings) -> None:
    async with client_for(create_app(settings)) as client:
        index = await client.get("/")
        health = await client.get("/healthz")
    assert index.status_code == 200
    body = index.json()
    assert set(body) == {"message", "mode", "version", "timestamp"}
    assert (body["mode"], body["version"]) == (settings.mode, settings.version)
    assert datetime.fromisoformat(body["timestamp"]).utcoffset().total_seconds() == 0
    assert health.status_code == 200
    hbody = health.json()
    assert set(hbody) == {"status", "mode", "version", "uptime_seconds"}
    assert (hbody["status"], hbody["mode"], hbody["version"]) == ("ok", settings.mode, settings.version)
    assert hbody["uptime_seconds"] >= 0
    for response in (index, health):
        assert response.headers["x-mode"] == settings.mode
        assert response.headers["x-app-version"] == settings.version


async def test_canary_mode_header_on_every_response_errors_included() -> None:
    app = create_app(CANARY)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug in a handler")

    async with client_for(app) as client:
        responses = {
            "404": await client.get("/no/such/path"),
            "405": await client.post("/"),
            "422": await client.post("/chaos", json={"mode": "slow"}),
            "500": await client.get("/boom"),
            "metrics": await client.get("/metrics"),
            "chaos-get": await client.get("/chaos"),
        }
        await client.post("/chaos", json={"mode": "error", "rate": 1.0})
        responses["chaos-500"] = await client.get("/")
        responses["chaos-404-path"] = await client.get("/anything")

    expected_status = {"404": 404, "405": 405, "422": 422, "500": 500, "metrics": 200, "chaos-get": 200}
    expected_status |= {"chaos-500": 500, "chaos-404-path": 500}
    for name, response in responses.items():
        assert response.status_code == expected_status[name], name
        assert response.headers["x-mode"] == "canary", name
        assert response.headers["x-app-version"] == "2.0.0-rc.1", name
    assert responses["500"].json()["error"] == "internal server error"
    assert responses["chaos-500"].json()["error"] == "chaos: injected error"


async def test_unhandled_error_is_counted_as_500(prom) -> None:
    app = create_app(STABLE)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug in a handler")

    async with client_for(app) as client:
        for _ in range(3):
            assert (await client.get("/boom")).status_code == 500
        samples = await scrape(client, prom)
    assert prom.value(samples, "http_requests_total", method="GET", path="/boom", status_code="500") == 3


async def test_chaos_state_starts_empty() -> None:
    async with client_for(create_app(CANARY)) as client:
        state = (await client.get("/chaos")).json()
    assert state == {"mode": "none", "duration": None, "rate": None, "active": 0, "since": None}


@pytest.mark.parametrize("body", [{"mode": "slow", "duration": 1}, {"mode": "error", "rate": 0.5}])
async def test_stable_refuses_fault_injection_with_a_reason(body: dict) -> None:
    async with client_for(create_app(STABLE)) as client:
        refused = await client.post("/chaos", json=body)
        state = (await client.get("/chaos")).json()
        after = await client.get("/")
    assert refused.status_code == 403
    assert "stable" in refused.json()["detail"] and "canary" in refused.json()["detail"]
    assert refused.headers["x-mode"] == "stable"
    assert state["mode"] == "none"
    assert after.status_code == 200


@pytest.mark.parametrize("settings", [STABLE, CANARY], ids=["stable", "canary"])
async def test_recover_is_always_allowed_and_idempotent(settings: Settings) -> None:
    async with client_for(create_app(settings)) as client:
        first = await client.post("/chaos", json={"mode": "recover"})
        second = await client.post("/chaos", json={"mode": "recover"})
    assert first.status_code == second.status_code == 200
    assert first.json()["mode"] == second.json()["mode"] == "none"


async def test_chaos_transitions_in_canary(prom) -> None:
    async with client_for(create_app(CANARY)) as client:
        seen = []
        for body, mode, active in [
            ({"mode": "slow", "duration": 2.5}, "slow", 1),
            ({"mode": "error", "rate": 0.25}, "error", 2),  # replaces slow
            ({"mode": "slow", "duration": 30}, "slow", 1),  # the upper bound is allowed
            ({"mode": "recover"}, "none", 0),
            ({"mode": "error", "rate": 1}, "error", 2),
            ({"mode": "recover"}, "none", 0),
        ]:
            response = await client.post("/chaos", json=body)
            assert response.status_code == 200, response.text
            state = response.json()
            assert (state["mode"], state["active"]) == (mode, active)
            assert (await client.get("/chaos")).json() == state
            samples = await scrape(client, prom)
            assert prom.value(samples, "chaos_active") == active
            seen.append(state)
    assert seen[0]["duration"] == 2.5 and seen[0]["rate"] is None and seen[0]["since"]
    assert seen[1]["rate"] == 0.25 and seen[1]["duration"] is None
    assert seen[3] == {"mode": "none", "duration": None, "rate": None, "active": 0, "since": None}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "mode"),
        ({"mode": "explode"}, "mode"),
        ({"mode": "slow"}, "duration"),
        ({"mode": "slow", "duration": 0}, "duration"),
        ({"mode": "slow", "duration": -1}, "duration"),
        ({"mode": "slow", "duration": 30.5}, "duration"),
        ({"mode": "slow", "duration": "long"}, "duration"),
        ({"mode": "error"}, "rate"),
        ({"mode": "error", "rate": 0}, "rate"),
        ({"mode": "error", "rate": 1.5}, "rate"),
        ({"mode": "slow", "duration": 1, "rate": 0.5}, "rate"),
        ({"mode": "recover", "duration": 1}, "duration"),
        ([{"mode": "recover"}], "mode"),
    ],
)
async def test_invalid_chaos_bodies_get_a_readable_422(body: object, mentions: str) -> None:
    async with client_for(create_app(CANARY)) as client:
        response = await client.post("/chaos", json=body)
        state = (await client.get("/chaos")).json()
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and mentions in detail
    assert '"mode": "recover"' in detail  # says what a valid body looks like
    assert isinstance(response.json()["errors"], list)
    assert state["mode"] == "none"


async def test_chaos_body_that_is_not_json_gets_a_readable_422() -> None:
    async with client_for(create_app(CANARY)) as client:
        response = await client.post("/chaos", content=b"slow please", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


async def test_error_rate_one_fails_every_request_and_is_counted_exactly(prom) -> None:
    async with client_for(create_app(CANARY)) as client:
        assert (await client.post("/chaos", json={"mode": "error", "rate": 1.0})).status_code == 200
        statuses = [(await client.get("/")).status_code for _ in range(10)]
        samples = await scrape(client, prom)
    assert statuses == [500] * 10
    assert prom.value(samples, "http_requests_total", method="GET", path="/", status_code="500") == 10
    assert prom.value(samples, "http_requests_total", method="GET", path="/", status_code="200") == 0
    assert prom.value(samples, "http_request_duration_seconds_count", method="GET", path="/") == 10


async def test_partial_error_rate_fails_some_requests(monkeypatch) -> None:
    # The module-level random decides; pin it to show the comparison is "draw < rate".
    draws = iter([0.1, 0.9, 0.29, 0.3])
    monkeypatch.setattr("demo_api.chaos.random.random", lambda: next(draws))
    async with client_for(create_app(CANARY)) as client:
        await client.post("/chaos", json={"mode": "error", "rate": 0.3})
        statuses = [(await client.get("/")).status_code for _ in range(4)]
    assert statuses == [500, 200, 500, 200]


async def test_observing_and_recovering_are_exempt_from_error_chaos() -> None:
    async with client_for(create_app(CANARY)) as client:
        await client.post("/chaos", json={"mode": "error", "rate": 1.0})
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/chaos")).json()["mode"] == "error"
        assert (await client.get("/healthz/")).status_code == 307  # the slash redirect is not failed either
        assert (await client.get("/")).status_code == 500
        assert (await client.post("/chaos", json={"mode": "recover"})).status_code == 200
        assert (await client.get("/")).status_code == 200


async def test_observing_and_recovering_are_exempt_from_slow_chaos() -> None:
    async with client_for(create_app(CANARY)) as client:
        await client.post("/chaos", json={"mode": "slow", "duration": 30})
        # A guard against hanging, not a timing assertion: a delayed request would take 30 s.
        with anyio.fail_after(15):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/chaos")).json()["mode"] == "slow"
            assert (await client.post("/chaos", json={"mode": "recover"})).status_code == 200
            assert (await client.get("/")).status_code == 200


async def test_slow_mode_does_not_block_the_event_loop(prom) -> None:
    app = create_app(CANARY)
    slow_entered = asyncio.Event()

    async def spy(scope, receive, send):
        # Runs synchronously into the chaos sleep once called, so the event is seen only once "/" is sleeping.
        if scope["type"] == "http" and scope["path"] == "/":
            slow_entered.set()
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=spy)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.post("/chaos", json={"mode": "slow", "duration": 0.6})
        slow = asyncio.create_task(client.get("/"))
        await slow_entered.wait()
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert not slow.done(), "/healthz had to wait for the slow request: the loop was blocked"
        assert (await slow).status_code == 200
        samples = await scrape(client, prom)
    # The slow request slept 0.6 s, so it sits above the 0.5 s bucket.
    assert prom.value(samples, "http_request_duration_seconds_bucket", method="GET", path="/", le="0.5") == 0
    assert prom.value(samples, "http_request_duration_seconds_count", method="GET", path="/") == 1


async def test_metric_values_after_known_traffic(prom) -> None:
    async with client_for(create_app(CANARY)) as client:
        for _ in range(3):
            await client.get("/")
        for _ in range(2):
            await client.get("/healthz")
        await client.get("/missing")
        await client.post("/")
        first = await scrape(client, prom)
        second = await scrape(client, prom)
    v = prom.value
    assert v(first, "http_requests_total", method="GET", path="/", status_code="200") == 3
    assert v(first, "http_requests_total", method="GET", path="/healthz", status_code="200") == 2
    assert v(first, "http_requests_total", method="GET", path=UNMATCHED_PATH, status_code="404") == 1
    assert v(first, "http_requests_total", method="POST", path="/", status_code="405") == 1
    assert v(first, "http_request_duration_seconds_count", method="GET", path="/") == 3
    assert v(first, "http_request_duration_seconds_sum", method="GET", path="/") > 0
    assert v(first, "app_mode") == 1
    assert v(first, "chaos_active") == 0
    assert v(second, "app_uptime_seconds") >= v(first, "app_uptime_seconds") > 0
    # Histogram: exactly the agreed buckets, cumulative, +Inf equal to the count.
    les = [float(labels["le"]) for labels in prom.label_sets(first, "http_request_duration_seconds_bucket")
           if labels["path"] == "/" and labels["method"] == "GET"]  # fmt: skip
    assert les == [*DURATION_BUCKETS, float("inf")]
    counts = [v(first, "http_request_duration_seconds_bucket", method="GET", path="/", le=str(le)) for le in les[:-1]]
    assert counts == sorted(counts)
    assert v(first, "http_request_duration_seconds_bucket", method="GET", path="/", le="+Inf") == 3
    # Scrapes are not counted, so scraping does not change the next window.
    assert not [s for s in prom.label_sets(second, "http_requests_total") if s["path"] == "/metrics"]
    assert v(second, "http_requests_total", method="GET", path="/", status_code="200") == 3


async def test_stable_app_mode_gauge_is_zero(prom) -> None:
    async with client_for(create_app(STABLE)) as client:
        samples = await scrape(client, prom)
    assert prom.value(samples, "app_mode") == 0


async def test_random_paths_and_methods_cannot_create_label_values(prom) -> None:
    async with client_for(create_app(CANARY)) as client:
        for i in range(5):
            assert (await client.get(f"/random-{i}/x")).status_code == 404
        await client.request("BREW", "/")
        samples = await scrape(client, prom)
    paths = {labels["path"] for labels in prom.label_sets(samples, "http_requests_total")}
    methods = {labels["method"] for labels in prom.label_sets(samples, "http_requests_total")}
    assert paths == {UNMATCHED_PATH, "/"}
    assert methods == {"GET", "OTHER"}
    assert prom.value(samples, "http_requests_total", method="GET", path=UNMATCHED_PATH, status_code="404") == 5


async def test_each_app_has_its_own_registry(prom) -> None:
    one, two = create_app(CANARY), create_app(STABLE)
    async with client_for(one) as c1, client_for(two) as c2:
        for _ in range(4):
            await c1.get("/")
        await c2.get("/")
        s1, s2 = await scrape(c1, prom), await scrape(c2, prom)
    assert prom.value(s1, "http_requests_total", method="GET", path="/", status_code="200") == 4
    assert prom.value(s2, "http_requests_total", method="GET", path="/", status_code="200") == 1


async def test_uninstrumented_app_serves_without_metrics() -> None:
    async with client_for(create_app(CANARY, instrument=False)) as client:
        assert (await client.get("/")).status_code == 200
        metrics = await client.get("/metrics")
        await client.post("/chaos", json={"mode": "error", "rate": 1.0})
        failed = await client.get("/")
    assert metrics.status_code == 404 and "METRICS_ENABLED" in metrics.json()["detail"]
    assert failed.status_code == 500 and failed.headers["x-mode"] == "canary"


def test_settings_defaults_and_parsing() -> None:
    assert Settings.from_env({}) == Settings("stable", "1.0.0", 3000, "0.0.0.0", True)
    env = {"MODE": "canary", "APP_VERSION": "2.1.0", "APP_PORT": "8081", "APP_HOST": "127.0.0.1"}
    assert Settings.from_env(env | {"METRICS_ENABLED": "0"}) == Settings("canary", "2.1.0", 8081, "127.0.0.1", False)
    assert Settings.from_env({"METRICS_ENABLED": "true"}).metrics_enabled is True


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("MODE", "blue"),
        ("MODE", "Canary"),
        ("APP_PORT", "0"),
        ("APP_PORT", "70000"),
        ("APP_PORT", "http"),
        ("APP_VERSION", "1.0\nX-Injected: 1"),
        ("APP_VERSION", ""),
        ("APP_HOST", " "),
        ("METRICS_ENABLED", "maybe"),
    ],
)
def test_settings_reject_bad_values_naming_the_variable(variable: str, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: bad})
    message = str(caught.value)
    assert message.startswith(f"invalid {variable}=") and "allowed" in message
    assert "\n" not in message
