"""`policy test`: run every `test_*` rule with the embedded engine, the way `opa test` does.

Each test is evaluated on its own, so a failing one is reported by name (an engine that only lists successes
would hide it): true passes; false, undefined or an evaluation error fails.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .bundle import PolicySet
from .embedded import EmbeddedEngine, PolicyError, clean_error

_PACKAGE_RE = re.compile(r"^package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
# Rule heads start a line (opa fmt style): `test_x if {`, `test_x := ...`, `test_x {` (v0), `test_x`.
_TEST_RE = re.compile(r"^(test_[A-Za-z0-9_]+)\b", re.MULTILINE)


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest class

    package: str
    name: str
    file: str
    passed: bool
    detail: str  # "" | "false" | "undefined" | the error
    seconds: float

    @property
    def qualified(self) -> str:
        return f"data.{self.package}.{self.name}"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.qualified,
            "file": self.file,
            "passed": self.passed,
            "detail": self.detail,
            "seconds": round(self.seconds, 6),
        }


def discover(policy_set: PolicySet) -> list[tuple[str, str, str]]:
    """(file, package, test name) for every test rule, in file order, each name once per package."""
    found: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for path, text in sorted(policy_set.modules.items()):
        package = _PACKAGE_RE.search(text)
        if package is None:
            continue
        for name in _TEST_RE.findall(text):
            key = (package.group(1), name)
            if key not in seen:
                seen.add(key)
                found.append((path, package.group(1), name))
    return found


def run_tests(policy_set: PolicySet) -> list[TestResult]:
    engine = EmbeddedEngine(policy_set, tests=True)
    results = []
    for path, package, name in discover(policy_set):
        started = time.perf_counter()
        try:
            defined, value = engine.query(f"data.{package}.{name}", {})
            passed = defined and value is True
            detail = "" if passed else ("undefined" if not defined else f"evaluated to {value!r}")
        except PolicyError as exc:
            passed, detail = False, clean_error(exc)
        results.append(TestResult(package, name, path, passed, detail, time.perf_counter() - started))
    return results
