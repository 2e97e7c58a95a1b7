"""Fixtures for the observe tests: a local-runtime manifest on free ports beside the demo API processes and the
real nginx that tests/conftest.py starts (`demo_api`, `local_nginx`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support import free_port, relaxed_host_thresholds


@pytest.fixture
def manifest_file(tmp_path: Path) -> Callable[..., Path]:
    def write(mode: str = "canary") -> Path:
        path = tmp_path / "manifest.yaml"
        path.write_text(
            f"services: {{image: swift-deploy-1-node:latest, port: 3000, mode: {mode}}}\n"
            f"nginx: {{image: nginx:latest, port: {free_port()}, admin_port: {free_port()}}}\n"
            "runtime: local\n"
            "policy:\n"
            "  engine: embedded\n"
            "  window_seconds: 30\n"
            f"  thresholds: {relaxed_host_thresholds()}\n",
            encoding="utf-8",
        )
        return path

    return write
