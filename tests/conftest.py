"""Session-wide: the real Open Policy Agent for the OPA-backed tests (`make opa` puts the pinned one at
.tools/bin/opa; `opa` on PATH works too).

Without an OPA those tests skip, all with the one reason below, reported as one line of the summary (their skip
reports all point here, so pytest folds them). With CI=true a missing OPA stops the run before any test: CI must run
them, never skip them.
"""

from __future__ import annotations

import os
import shutil

import pytest

REASON = "no OPA binary (.tools/bin/opa, or `opa` on PATH): run `make opa` (needs Go) to run the OPA-backed tests"


def find_test_opa() -> str | None:
    from swiftdeploy.policy.server import TOOLS_OPA

    if TOOLS_OPA.is_file() and os.access(TOOLS_OPA, os.X_OK):
        return str(TOOLS_OPA)
    return shutil.which("opa")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") == "true" and find_test_opa() is None:
        raise pytest.UsageError(f"CI=true and {REASON}; CI must run them, not skip them")


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
