"""Policy decisions: the CLI collects facts and asks; the Rego policy decides (docs/contracts.md#policy-decisions).

`evaluate(m, domain, input)` picks the engine from `m.policy.engine`:
- `embedded`: regorus in-process, on the same policies and data as the OPA bundle;
- `opa`: the OPA server on 127.0.0.1:<opa.port> only (unreachable -> PolicyEngineUnavailable, exit 4);
- `auto`: OPA when the stack runs one (`asks_opa_server`: docker; local with an OPA binary) and it answers
  /health within opa.timeout, else embedded.
Fail closed everywhere: an engine that cannot answer raises, it never yields allow.

Light on import: regorus and httpx load only when an engine is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInput, PolicyBlocked
from .decision import DOMAINS, VERDICTS, Decision, InvalidDecision, Violation, parse_decision

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = [
    "DOMAINS",
    "VERDICTS",
    "Decision",
    "InvalidDecision",
    "PolicyEngine",
    "Violation",
    "check_domain",
    "check_policies",
    "evaluate",
    "parse_decision",
    "require_allow",
    "select_engine",
]


class PolicyEngine(Protocol):
    name: str

    def evaluate(self, domain: str, input: Any) -> Decision: ...


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise InvalidInput(f"unknown policy domain {domain!r}", hint=f"use one of: {', '.join(DOMAINS)}")
    return domain


def select_engine(m: Manifest | None, *, transport: Any = None) -> PolicyEngine:
    """The engine `m.policy.engine` asks for (see module doc). Raises PolicyEngineUnavailable for `opa` when OPA
    does not answer /health. `transport` (an httpx transport) is for tests."""
    from .bundle import load_policy_set
    from .embedded import EmbeddedEngine

    if m is not None and asks_opa_server(m):
        from ..errors import PolicyEngineUnavailable
        from .bundle import expected_revision
        from .opa import OpaEngine, opa_url

        revision = expected_revision(m)  # a decision from any other bundle is refused
        opa = OpaEngine(opa_url(m.opa.port), timeout=m.opa.timeout, transport=transport, expect_revision=revision)
        try:
            opa.health()
            return opa
        except PolicyEngineUnavailable:
            opa.close()
            if m.policy.engine == "opa":
                raise
    return EmbeddedEngine.cached(load_policy_set(m))


def asks_opa_server(m: Manifest) -> bool:
    """Whether the engine choice asks the OPA server at 127.0.0.1:<opa.port> first: `opa` always (and nothing
    else); `auto` when the manifest's runtime runs OPA as a service of the stack (`runtime.stack_runs_opa`);
    `embedded` never."""
    from ..runtime import stack_runs_opa

    if m.policy.engine == "opa":
        return True
    return m.policy.engine == "auto" and stack_runs_opa(m)


def evaluate(m: Manifest | None, domain: str, input: Any, *, transport: Any = None) -> Decision:
    """One decision for `domain` ("infrastructure" | "canary") on `input`, from the engine the manifest selects.
    `m=None`: the default policies and thresholds, embedded engine. A canary input without `evidence` gets the
    fixed-window evidence derived from its tracks (swiftdeploy.judge.with_evidence)."""
    check_domain(domain)
    if domain == "canary":  # today's TRACK-only input: swiftdeploy derives the evidence the policy judges
        from ..judge import thresholds_of, with_evidence

        input = with_evidence(input, thresholds_of(m))
    engine = select_engine(m, transport=transport)
    try:
        return engine.evaluate(domain, input)
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()


def require_allow(decision: Decision) -> Decision:
    """Return the decision when it allows; otherwise raise PolicyBlocked (exit 3) naming every violation."""
    if decision.allow and decision.verdict == "allow":
        return decision
    raise PolicyBlocked(
        f"{decision.domain} policy answered {decision.verdict} ({decision.engine} engine): {decision.reasons()}",
        decision=decision,
    )


def check_policies(m: Manifest | None) -> None:
    """Compile every policy module (tests included) and evaluate each domain once; raises PolicyError (exit 2)
    with file:line on the first problem. Used by `validate`."""
    from .bundle import load_policy_set
    from .embedded import EmbeddedEngine

    EmbeddedEngine(load_policy_set(m), tests=True).check(DOMAINS)
