"""The decision every policy domain answers (docs/contracts.md#the-decision), and a strict reader for engine results.

Stdlib only: `Decision` is imported by history, status and lifecycle code that must stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import field as dataclass_field
from typing import Any, Literal

from ..format import format_number as _fmt

DOMAINS: tuple[str, ...] = ("infrastructure", "canary")
VERDICTS: tuple[str, ...] = ("allow", "deny", "inconclusive")

Verdict = Literal["allow", "deny", "inconclusive"]
EngineName = Literal["opa", "embedded"]


_KNOWN = ("rule", "message", "observed", "threshold", "unit", "field", "bound", "bound_kind", "confidence_percent")


@dataclass(frozen=True)
class Violation:
    """One reason of a decision: a violation (deny/inconclusive) or, in `Decision.basis`, what an allow rests on.

    Evidence-backed ones (the canary domain) also carry the confidence bound of the observed value (`bound`, a
    "lower" or "upper" `bound_kind`, at `confidence_percent`) and, in `extra`, the counts and window they rest on
    ("counts", "window_seconds", ...): every other key the policy sent, kept as sent."""

    rule: str
    message: str
    observed: Any = None
    threshold: Any = None
    unit: str = ""
    field: str | None = None  # input violations name the offending field
    bound: Any = None
    bound_kind: str | None = None  # "lower" | "upper"
    confidence_percent: Any = None
    extra: dict[str, Any] = dataclass_field(default_factory=dict)

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
        if self.bound_kind is not None:
            out.update(bound=self.bound, bound_kind=self.bound_kind, confidence_percent=self.confidence_percent)
        out.update(self.extra)
        return out

    @property
    def counts(self) -> dict[str, Any]:
        counts = self.extra.get("counts")
        return counts if isinstance(counts, dict) else {}

    def figures(self) -> str:
        """ "observed vs threshold unit", with the confidence bound when there is one:
        "3.2% (above 1.8% at 99% confidence) vs 1%"; "" when there is no threshold."""
        if self.threshold is None:
            return ""
        if self.bound_kind in ("lower", "upper") and self.unit != "requests":
            side = "above" if self.bound_kind == "lower" else "below"
            confidence = _fmt(self.confidence_percent, "%")
            bound = f"{side} {_fmt(self.bound, self.unit)} at {confidence} confidence"
            if self.observed is None:  # e.g. a ratio to a stable track without errors
                return f"{bound} vs {_fmt(self.threshold, self.unit)}"
            return f"{_fmt(self.observed, self.unit)} ({bound}) vs {_fmt(self.threshold, self.unit)}"
        unit = f" {self.unit}" if self.unit else ""
        return f"{_fmt(self.observed)} vs {_fmt(self.threshold)}{unit}"

    def summary(self) -> str:
        """ "rule: observed vs threshold unit" (just the message's gist when there is no threshold)."""
        if self.threshold is None:
            if self.field is None:
                return f"{self.rule}: {self.message}"
            got = "" if self.observed is None else f" (got {_fmt(self.observed)})"
            return f"{self.rule}: {self.field}{got}"
        return f"{self.rule}: {self.figures()}"


@dataclass(frozen=True)
class Decision:
    domain: str
    allow: bool
    verdict: Verdict
    violations: list[Violation] = field(default_factory=list)
    engine: EngineName = "embedded"
    input: dict[str, Any] = field(default_factory=dict)
    basis: list[Violation] = field(default_factory=list)  # what the verdict rests on (the canary domain's allows)

    @property
    def evidence(self) -> dict[str, Any] | None:
        """The evidence the canary policy judged (counts and confidence bounds), when the input carried one."""
        value = self.input.get("evidence")
        return value if isinstance(value, dict) else None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "domain": self.domain,
            "allow": self.allow,
            "verdict": self.verdict,
            "violations": [v.to_dict() for v in self.violations],
            "engine": self.engine,
            "input": self.input,
        }
        if self.basis:
            out["basis"] = [b.to_dict() for b in self.basis]
        return out

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
    raw_basis = value.get("basis", [])
    if not isinstance(raw_basis, list):
        raise InvalidDecision(f"basis must be a list, got {_type(raw_basis)}")
    basis = sorted((_violation(i, v, "basis") for i, v in enumerate(raw_basis)), key=lambda v: v.rule)
    return Decision(
        domain=domain,
        allow=allow,
        verdict=verdict,
        violations=violations,
        engine=engine,
        input=input if isinstance(input, dict) else {"value": input},
        basis=basis,
    )


def parse_violation(raw: Any) -> Violation:
    """One violation as a decision record stores it (`Violation.to_dict()`), read back strictly (InvalidDecision)."""
    return _violation(0, raw)


def _violation(index: int, raw: Any, where: str = "violations") -> Violation:
    if not isinstance(raw, dict):
        raise InvalidDecision(f"{where}[{index}] must be an object, got {_type(raw)}")
    rule, message = raw.get("rule"), raw.get("message")
    if not isinstance(rule, str) or not rule:
        raise InvalidDecision(f"{where}[{index}].rule must be a non-empty string")
    if not isinstance(message, str):
        raise InvalidDecision(f"{where}[{index}].message must be a string")
    unit = raw.get("unit")
    field_name = raw.get("field")
    kind = raw.get("bound_kind")
    return Violation(
        rule=rule,
        message=message,
        observed=raw.get("observed"),
        threshold=raw.get("threshold"),
        unit=unit if isinstance(unit, str) else "",
        field=field_name if isinstance(field_name, str) else None,
        bound=raw.get("bound") if isinstance(kind, str) else None,
        bound_kind=kind if isinstance(kind, str) else None,
        confidence_percent=raw.get("confidence_percent") if isinstance(kind, str) else None,
        extra={k: v for k, v in raw.items() if k not in _KNOWN},
    )


def _type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )
