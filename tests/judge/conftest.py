"""Fixtures for the canary-judgement tests: Prometheus text of a track as the demo API renders it, manifests.

Helpers are fixtures (not a helper module) so the tests work under any pytest import mode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from demo_api.metrics import DURATION_BUCKETS
from swiftdeploy.manifest import load_manifest


def render(ok: int, errors: int, latencies_ms: list[float], uptime: float = 100.0) -> str:
    """The demo API's exposition after `ok` 200s and `errors` 500s on GET /, with these latencies (one per request;
    fewer latencies than requests count as instant), plus probes that must not count."""
    n = ok + errors
    lines = [
        "# TYPE http_requests_total counter",
        f'http_requests_total{{method="GET",path="/",status_code="200"}} {ok}',
        f'http_requests_total{{method="GET",path="/",status_code="500"}} {errors}',
        'http_requests_total{method="GET",path="/healthz",status_code="200"} 7',
        "# TYPE http_request_duration_seconds histogram",
    ]
    for le in DURATION_BUCKETS:
        below = (n - len(latencies_ms)) + sum(1 for ms in latencies_ms if ms <= le * 1000.0)
        lines.append(f'http_request_duration_seconds_bucket{{le="{le}",method="GET",path="/"}} {below}')
    lines.append(f'http_request_duration_seconds_bucket{{le="+Inf",method="GET",path="/"}} {n}')
    lines.append(f'http_request_duration_seconds_count{{method="GET",path="/"}} {n}')
    lines.append(f'http_request_duration_seconds_sum{{method="GET",path="/"}} {sum(latencies_ms) / 1000.0}')
    lines += ["# TYPE app_uptime_seconds gauge", f"app_uptime_seconds {uptime}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def exposition() -> Callable[..., str]:
    """exposition(ok, errors, latencies_ms=[...]) -> Prometheus text of one track (cumulative counters)."""

    def build(ok: int, errors: int = 0, latencies_ms: list[float] | None = None, uptime: float = 100.0) -> str:
        return render(ok, errors, latencies_ms or [], uptime)

    return build


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Any]:
    """write_manifest("thresholds: {...}") -> a loaded local-runtime Manifest with the embedded engine."""

    def write(thresholds: str = "", *, admin_port: int = 8081) -> Any:
        text = (
            "services: {image: swift-deploy-1-node:latest, port: 3000}\n"
            f"nginx: {{port: 8080, admin_port: {admin_port}}}\n"
            "runtime: local\n"
            "policy:\n  engine: embedded\n"
        )
        if thresholds:
            text += f"  thresholds: {thresholds}\n"
        path = tmp_path / "manifest.yaml"
        path.write_text(text)
        return load_manifest(path)

    return write
