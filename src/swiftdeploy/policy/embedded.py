"""The embedded Rego engine: microsoft/regorus (PyPI `gordon-to-regorus`, pinned), in-process.

Compiled engines are cached by the content of the policies and data, so repeated decisions (status refreshes,
benchmarks) skip parsing. A regorus engine may only be used from the thread that created it (another thread gets a
PanicException, a BaseException), so the cache is per thread; each engine also has its own lock.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..errors import PolicyError
from .bundle import PolicySet
from .decision import Decision, InvalidDecision, parse_decision

_CACHE = threading.local()  # per-thread {fingerprint: EmbeddedEngine}
_NO_INPUT: Any = object()


def clean_error(exc: BaseException) -> str:
    """regorus messages carry a Rust backtrace when RUST_BACKTRACE is set; keep the '--> file:line:col' part."""
    text = str(exc).split("Stack backtrace:")[0].strip()
    return text.replace("\n\n", "\n")


# RFC 8259 section 6: integers beyond +-(2**53 - 1) are not interoperable. The engines disagree on them (regorus
# turns an integer above 2**64 into a float, OPA keeps every digit: the differential test found it), so no such
# number reaches either engine.
MAX_SAFE_INTEGER = 2**53 - 1


def to_json(value: Any, what: str) -> str:
    """The policy input as JSON, the same text for both engines. Refuses (PolicyError) NaN, Infinity, values that
    are not JSON, and integers beyond +-MAX_SAFE_INTEGER."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{what} is not valid JSON: {exc}", hint="send plain JSON numbers, no NaN/Infinity") from exc
    where = _unsafe_integer(value, "input")
    if where is not None:
        raise PolicyError(
            f"{what} has an integer beyond +-2**53-1 at {where}, which JSON engines do not read alike (RFC 8259)",
            hint="send it as a float (e.g. 1.8e19) or a smaller number",
        )
    return text


def _unsafe_integer(value: Any, path: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return path if abs(value) > MAX_SAFE_INTEGER else None
    if isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((where for p, v in items if (where := _unsafe_integer(v, p)) is not None), None)


def query_value(engine: Any, query: str) -> tuple[bool, Any]:
    """(defined, value) of a query, the way OPA's data API answers: an undefined result has no `result`."""
    answer = json.loads(engine.eval_query_as_json(query))
    results = answer.get("result") or []
    if not results:
        return False, None
    return True, results[0]["expressions"][0]["value"]


class EmbeddedEngine:
    name = "embedded"

    def __init__(self, policy_set: PolicySet, *, tests: bool = False) -> None:
        import regorus

        self.policy_set = policy_set
        self._lock = threading.Lock()
        self._engine = regorus.Engine()
        modules = policy_set.modules if tests else policy_set.policies
        for path, text in sorted(modules.items()):
            try:
                self._engine.add_policy(path, text)
            except RuntimeError as exc:
                raise PolicyError(
                    f"policy {path} in {policy_set.origin} does not compile:\n{clean_error(exc)}",
                    hint="fix the Rego (v1 syntax: `import rego.v1`, `if`, `contains`)",
                ) from exc
        self._engine.add_data_json(policy_set.data_json())

    @classmethod
    def cached(cls, policy_set: PolicySet) -> EmbeddedEngine:
        key = policy_set.fingerprint(tests=False)
        engines: dict[str, EmbeddedEngine] = _CACHE.__dict__.setdefault("engines", {})
        engine = engines.get(key)
        if engine is None:
            engine = engines[key] = cls(policy_set)
        return engine

    def query(self, query: str, input: Any = _NO_INPUT) -> tuple[bool, Any]:
        """Evaluate one query with `input` (default `{}`; a None input is JSON null, as OPA sees it). Evaluation
        errors (bad builtin call, conflicts) -> PolicyError."""
        text = to_json({} if input is _NO_INPUT else input, "the policy input")
        with self._lock:
            try:
                self._engine.set_input_json(text)
                return query_value(self._engine, query)
            except RuntimeError as exc:
                raise PolicyError(
                    f"evaluating {query} with the policies in {self.policy_set.origin} failed:\n{clean_error(exc)}",
                    hint="fix the policy",
                ) from exc

    def evaluate(self, domain: str, input: Any) -> Decision:
        path = f"data.swiftdeploy.{domain}.decision"
        defined, value = self.query(path, input)
        if not defined:
            raise PolicyError(
                f"the policies in {self.policy_set.origin} define no {path}",
                hint=f"add `package swiftdeploy.{domain}` with a `decision` rule, or remove policy.dir",
            )
        try:
            return parse_decision(value, domain=domain, engine="embedded", input=input)
        except InvalidDecision as exc:
            raise PolicyError(
                f"{path} from {self.policy_set.origin} is not a valid decision: {exc}",
                hint='answer {"allow": bool, "verdict": "allow"|"deny"|"inconclusive", "violations": [...]}',
            ) from exc

    def packages(self) -> list[str]:
        """Package paths ("data.swiftdeploy.canary") of every loaded module."""
        return sorted(self._engine.get_packages())

    def check(self, domains: tuple[str, ...]) -> None:
        """Evaluate every package and every domain's decision on empty input, so that errors regorus only finds
        at evaluation time (unknown functions, rule conflicts) surface now rather than mid-deploy."""
        for package in self.packages():
            self.query(package, {})
        for domain in domains:
            self.evaluate(domain, {})
