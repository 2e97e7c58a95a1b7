"""The decision every policy domain answers (docs/contracts.md#the-decision), and a strict reader for engine results.

Stdlib only: `Decision` is imported by history, status and lifecycle code that must stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..format import format_number as _fmt

DOMAINS: tuple[str, ...] = ("infrastructure", "canary")
VERDICTS: tuple[str, ...] = ("allow", "deny", "inconclusive")

Verdict = Literal["allow", "deny", "inconclusive"]
EngineName = Literal["opa", "embedded"]


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    observed: Any = None
    threshold: Any = None
    unit: str = ""
    field: str | None = None  # input violations name the offending field

    def to_dict(self) -> dict[str, Any]:
        out = {
            "rule": self.rule,
            "message": self.message,
            "observed": self.observed,
            "threshold": self.threshold,
            "unit": self.unit,
        }
        if self.field is not None:
            out["field"] = self.field
        return out

    def summary(self) -> str:
        """ "rule: observed vs threshold unit" (just the message's gist when there is no threshold)."""
        if self.threshold is None:
            if self.field is None:
                return f"{self.rule}: {self.message}"
            got = "" if self.observed is None else f" (got {_fmt(self.observed)})"
            return f"{self.rule}: {self.field}{got}"
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.rule}: {_fmt(self.observed)} vs {_fmt(self.threshold)}{unit}"


@dataclass(frozen=True)
class Decision:
    domain: str
    allow: bool
    verdict: Verdict
    violations: list[Violation] = field(default_factory=list)
    engine: EngineName = "embedded"
    input: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "allow": self.allow,
            "verdict": self.verdict,
            "violations": [v.to_dict() for v in self.violations],
            "engine": self.engine,
            "input": self.input,
        }

    def reasons(self) -> str:
        """Every violation's message on one line, for error messages."""
        return "; ".join(f"[{v.rule}] {v.message}" for v in self.violations)


class InvalidDecision(ValueError):
    """An engine answered something that is not a decision. Engines turn this into their own error."""


def parse_decision(value: Any, *, domain: str, engine: EngineName, input: Any) -> Decision:
    """Validate an engine's raw `decision` value. Anything inconsistent is rejected, never read as allow."""
    if not isinstance(value, dict):
        raise InvalidDecision(f"expected an object with allow, verdict and violations, got {_type(value)}")
    missing = [k for k in ("allow", "verdict", "violations") if k not in value]
    if missing:
        raise InvalidDecision(f"missing key(s) {', '.join(missing)}")
    allow, verdict, raw = value["allow"], value["verdict"], value["violations"]
    if not isinstance(allow, bool):
        raise InvalidDecision(f"allow must be a boolean, got {_type(allow)}")
    if verdict not in VERDICTS:
        raise InvalidDecision(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    if allow != (verdict == "allow"):
        raise InvalidDecision(f"allow is {str(allow).lower()} but verdict is {verdict!r}")
    if not isinstance(raw, list):
        raise InvalidDecision(f"violations must be a list, got {_type(raw)}")
    violations = [_violation(i, v) for i, v in enumerate(raw)]
    if verdict != "allow" and not violations:
        raise InvalidDecision(f"verdict {verdict!r} without any violation saying why")
    violations.sort(key=lambda v: (v.rule, v.field or "", v.message))
    return Decision(
        domain=domain,
        allow=allow,
        verdict=verdict,
        violations=violations,
        engine=engine,
        input=input if isinstance(input, dict) else {"value": input},
    )


def _violation(index: int, raw: Any) -> Violation:
    if not isinstance(raw, dict):
        raise InvalidDecision(f"violations[{index}] must be an object, got {_type(raw)}")
    rule, message = raw.get("rule"), raw.get("message")
    if not isinstance(rule, str) or not rule:
        raise InvalidDecision(f"violations[{index}].rule must be a non-empty string")
    if not isinstance(message, str):
        raise InvalidDecision(f"violations[{index}].message must be a string")
    unit = raw.get("unit")
    field_name = raw.get("field")
    return Violation(
        rule=rule,
        message=message,
        observed=raw.get("observed"),
        threshold=raw.get("threshold"),
        unit=unit if isinstance(unit, str) else "",
        field=field_name if isinstance(field_name, str) else None,
    )


def _type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )
