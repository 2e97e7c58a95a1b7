"""Fixtures for the policy tests: manifests on disk, canned inputs (shared helpers: tests/support.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import HEALTHY_HOST, free_port

from swiftdeploy.manifest import load_manifest

# 600 clean requests: enough for the canary gate to show the error rate and slow share below the bad rates
GOOD_TRACK = {"requests": 600, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 20.0, "p99_ms": 100.0}


@pytest.fixture(autouse=True)
def _no_rust_backtrace(monkeypatch: pytest.MonkeyPatch) -> None:
    # regorus appends a Rust backtrace to errors when this is set; the library strips it, tests check that too.
    monkeypatch.setenv("RUST_BACKTRACE", "1")


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Any]:
    """write_manifest(extra_yaml="policy:\\n  engine: embedded") -> loaded Manifest in tmp_path."""

    def write(
        extra: str = "", *, engine: str | None = "embedded", runtime: str = "local", admin_port: int = 8081
    ) -> Any:
        text = (
            "services: {image: swift-deploy-1-node:latest, port: 3000}\n"
            f"nginx: {{image: nginx:latest, port: 8080, admin_port: {admin_port}}}\n"
            "network: {name: swiftdeploy-net, driver_type: bridge}\n"
            f"runtime: {runtime}\n"
        )
        if engine is not None and "policy:" not in extra:
            text += f"policy:\n  engine: {engine}\n"
        path = tmp_path / "manifest.yaml"
        path.write_text(text + extra)
        return load_manifest(path)

    return write


@pytest.fixture
def healthy_host() -> dict[str, Any]:
    return dict(HEALTHY_HOST)


@pytest.fixture
def canary_window() -> Callable[..., dict[str, Any]]:
    """canary_window(canary={...changes}, stable={...changes} | None) -> a canary policy input."""

    def build(canary: dict | None = None, stable: dict | None | str = "good", window_seconds: Any = 30):
        return {
            "window_seconds": window_seconds,
            "canary": {**GOOD_TRACK, **(canary or {})},
            "stable": None if stable is None else {**GOOD_TRACK, **({} if stable == "good" else stable)},
        }

    return build


@pytest.fixture
def real_opa(opa_binary, write_manifest) -> Callable[..., Any]:
    """real_opa(extra_yaml="") -> Manifest (local runtime, engine opa, the test OPA binary, a free opa.port) whose
    generated files are written and whose OPA service runs, started exactly as `deploy` starts it
    (runtime/opa_service.py). Every OPA started here is stopped afterwards."""
    from swiftdeploy import generate
    from swiftdeploy.runtime.local import LocalRuntime

    started: list[Any] = []

    def start(extra: str = "", *, timeout: float = 1.0) -> Any:
        opa = f"opa: {{port: {free_port()}, binary: {opa_binary}, timeout: {timeout}}}\n"
        m = write_manifest(opa + extra, engine=None if "policy:" in extra else "opa", runtime="local")
        generate.write(m)
        started.append(m)
        LocalRuntime().start_policy_engine(m, timeout=30)
        return m

    yield start
    for m in started:
        LocalRuntime().down(m)
