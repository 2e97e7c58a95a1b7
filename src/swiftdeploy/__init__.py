"""swiftdeploy: policy-gated canary deployments on a single host — the library API.

Everything the CLI does is a function here; the CLI only parses arguments and renders results. A script can::

    import swiftdeploy

    m = swiftdeploy.load_manifest("manifest.yaml")          # validated model (ManifestError, exit 2)
    policies = swiftdeploy.load_policy_set(m)                # reads the .rego files and data.json the manifest uses
    files = swiftdeploy.render_all(m, policies)              # pure: {"docker-compose.yml": text, "nginx.conf": ...}
    facts = swiftdeploy.host_facts(m.base_dir)               # what the infrastructure policy sees
    decision = swiftdeploy.evaluate(m, "infrastructure", facts)
    if not decision.allow:
        print(decision.verdict, [v.message for v in decision.violations])
    verdict = swiftdeploy.judge_canary(before, after, seconds=30, manifest=m)  # Prometheus texts per track
    print(verdict.verdict, verdict.evidence["error_rate"]["upper_percent"], [b.message for b in verdict.basis])
    for record in swiftdeploy.read_history(m.history_path):
        ...

Names load lazily (PEP 562): `import swiftdeploy` imports nothing heavy (no Typer, Rich, Pydantic, httpx, docker,
FastAPI), and each name imports only its own module on first use. Errors are eager: every failure raises a
`SwiftDeployError` subclass whose `exit_code` is what the CLI exits with and whose message says how to fix it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    DriftDetected,
    HealthTimeout,
    InvalidInput,
    LockHeld,
    ManifestError,
    OperationAborted,
    OperationFailed,
    OperationInterrupted,
    PolicyBlocked,
    PolicyEngineUnavailable,
    PolicyError,
    RolloutPaused,
    RuntimeUnavailable,
    SwiftDeployError,
)

__version__ = "0.1.0"

# public name -> (module, attribute) for the lazy loader.
_LAZY: dict[str, tuple[str, str]] = {
    # the manifest
    "Manifest": ("swiftdeploy.manifest", "Manifest"),
    "load_manifest": ("swiftdeploy.manifest", "load_manifest"),
    "parse_manifest": ("swiftdeploy.manifest", "parse_manifest"),
    # generated files (pure: model in, text out)
    "render_all": ("swiftdeploy.render", "render_all"),
    "render_compose": ("swiftdeploy.render", "render_compose"),
    "render_nginx": ("swiftdeploy.render", "render_nginx"),
    "NginxTarget": ("swiftdeploy.render", "NginxTarget"),
    # policy
    "load_policy_set": ("swiftdeploy.policy.bundle", "load_policy_set"),
    "host_facts": ("swiftdeploy.policy.facts", "host_facts"),
    "evaluate": ("swiftdeploy.policy", "evaluate"),
    "require_allow": ("swiftdeploy.policy", "require_allow"),
    "Decision": ("swiftdeploy.policy", "Decision"),
    "Violation": ("swiftdeploy.policy", "Violation"),
    # metrics
    "admin_url": ("swiftdeploy.metrics", "admin_url"),
    "scrape": ("swiftdeploy.metrics", "scrape"),
    "window": ("swiftdeploy.metrics", "window"),
    "canary_input": ("swiftdeploy.metrics", "canary_input"),
    # canary judgement (the evidence and the gate's decision, exactly as `promote stable` judges)
    "judge_canary": ("swiftdeploy.judge", "judge_canary"),
    # history
    "read_history": ("swiftdeploy.history", "read"),
    "append_history": ("swiftdeploy.history", "append"),
    "record_decision": ("swiftdeploy.history", "record_decision"),
    # operations: deploy..teardown take the manifest path, hold the deploy lock and record history;
    # chaos and traffic take a loaded Manifest
    "deploy": ("swiftdeploy.ops", "deploy"),
    "promote_canary": ("swiftdeploy.ops", "promote_canary"),
    "promote_stable": ("swiftdeploy.ops", "promote_stable"),
    "rollout": ("swiftdeploy.ops", "rollout"),
    "abort": ("swiftdeploy.ops", "abort"),
    "rollback": ("swiftdeploy.ops", "rollback"),
    "teardown": ("swiftdeploy.ops", "teardown"),
    "undo": ("swiftdeploy.ops", "undo"),
    "chaos": ("swiftdeploy.ops", "chaos"),
    "traffic": ("swiftdeploy.ops", "traffic"),
}

# A literal list (type checkers and linters read it); tests check it matches _LAZY and that every name resolves.
__all__ = [
    "__version__",
    # the manifest
    "Manifest",
    "load_manifest",
    "parse_manifest",
    # generated files
    "render_all",
    "render_compose",
    "render_nginx",
    "NginxTarget",
    # policy
    "load_policy_set",
    "host_facts",
    "evaluate",
    "require_allow",
    "Decision",
    "Violation",
    # metrics
    "admin_url",
    "scrape",
    "window",
    "canary_input",
    # canary judgement
    "judge_canary",
    # history
    "read_history",
    "append_history",
    "record_decision",
    # operations
    "deploy",
    "promote_canary",
    "promote_stable",
    "rollout",
    "abort",
    "rollback",
    "teardown",
    "undo",
    "chaos",
    "traffic",
    # errors
    "SwiftDeployError",
    "OperationFailed",
    "OperationInterrupted",
    "OperationAborted",
    "RolloutPaused",
    "DriftDetected",
    "LockHeld",
    "RuntimeUnavailable",
    "HealthTimeout",
    "InvalidInput",
    "ManifestError",
    "PolicyError",
    "PolicyBlocked",
    "PolicyEngineUnavailable",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'swiftdeploy' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # what type checkers and IDEs see: the real objects behind the lazy names
    from .history import append as append_history
    from .history import read as read_history
    from .history import record_decision
    from .judge import judge_canary
    from .manifest import Manifest, load_manifest, parse_manifest
    from .metrics import admin_url, canary_input, scrape, window
    from .ops import (
        abort,
        chaos,
        deploy,
        promote_canary,
        promote_stable,
        rollback,
        rollout,
        teardown,
        traffic,
        undo,
    )
    from .policy import Decision, Violation, evaluate, require_allow
    from .policy.bundle import load_policy_set
    from .policy.facts import host_facts
    from .render import NginxTarget, render_all, render_compose, render_nginx
