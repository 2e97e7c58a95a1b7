"""deploy: init (write the generated files) -> infrastructure gate -> start the stack -> wait healthy -> events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..hooks import run_hooks
from .base import Operation, OpResult, Progress, failure_event


def release_facts(op: Operation, direct: bool) -> dict[str, Any]:
    """What the infrastructure policy needs to see a new release going straight onto stable
    (docs/contracts.md#inputs): the version and image the running stable app was started with (null when none runs,
    or the runtime cannot tell), the ones the manifest asks for, and whether `--direct` was given."""
    from ..runtime import service_of

    state = op.runtime.health(op.m).get(service_of(op.m, "stable"))
    running = state if state is not None and state.running else None
    return {
        "running_version": running.version if running else None,
        "running_image": running.image if running else None,
        "requested_version": op.m.services.version,
        "requested_image": op.m.services.image,
        "direct": direct,
    }


def deploy(
    manifest_path: Path | str, timeout: float = 60.0, progress: Progress | None = None, direct: bool = False
) -> OpResult:
    """Deploy the manifest's stack (idempotent: a running stack converges to the manifest).

    Raises PolicyBlocked (exit 3) when the infrastructure policy denies - a busy host, or (unless `direct` or the
    `allow_direct_deploy` threshold) a new version or image for a running stable: nothing is started then;
    HealthTimeout (exit 1) naming the service that did not become healthy; RuntimeUnavailable when docker/nginx is
    missing.
    """
    from .. import generate
    from ..policy.facts import host_facts
    from ..runtime import admin_address, service_of

    with Operation(manifest_path, "deploy", progress) as op:
        m = op.m
        result = op.result
        result.mode_to = m.services.mode
        result.image, result.version = m.services.image, m.services.version
        op.event("deploy_started", mode=m.services.mode, image=m.services.image, version=m.services.version)
        with failure_event(op, "deploy_failed"):
            op.progress("writing generated files")
            result.generated = [str(p) for p in generate.write(m)]
            # The first gate of a docker deploy may ask the stack's own OPA server: start it before asking.
            op.runtime.start_policy_engine(m, timeout=min(30.0, timeout), progress=op.progress)
            op.progress("checking the host against the infrastructure policy")
            facts = host_facts(m.base_dir) | release_facts(op, direct)
            op.gate("infrastructure", facts, gate="deploy", blocked_event="deploy_blocked")
            run_hooks(op, "pre_deploy", verdict="allow")
            started = time.monotonic()
            op.runtime.up(m, timeout=timeout, progress=op.progress)
            services = [service_of(m, "stable"), "nginx"]
            if m.services.mode == "canary":
                services.insert(1, m.canary_name)
            op.progress("waiting until every service is healthy")
            op.runtime.wait_healthy(m, services, max(1.0, timeout - (time.monotonic() - started)))
        op.snapshot_services()
        result.message = (
            f"deployed {m.services.name} {m.services.version} ({m.services.mode} mode) on the {op.runtime.name} "
            f"runtime: public http://127.0.0.1:{m.nginx.port}, admin {admin_address(m)}"
        )
        op.event(
            "deploy_succeeded",
            mode=m.services.mode,
            image=m.services.image,
            version=m.services.version,
            services={k: {"healthy": v["healthy"], "port": v.get("port")} for k, v in result.services.items()},
            seconds=round(time.monotonic() - started, 3),
        )
        run_hooks(op, "post_deploy")
        return result
