"""`swiftdeploy ps [--json]`: every service of the stack as the runtime sees it (library: `Runtime.services`, in
runtime/local.py and runtime/docker.py)."""

from __future__ import annotations

from typing import Annotated

import typer


def ps(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the services as JSON on stdout.")] = False,
) -> None:
    """Each service of the stack (stable, canary, nginx, OPA when it runs as a service): state, pid or container,
    ports, version, uptime, health. Lists what the manifest's mode expects even when it is absent. Exit 0 whatever
    runs (`status --once` is the health probe)."""
    from ..runtime import get_runtime
    from .common import load
    from .output import print_json, render_services

    m = load(ctx)
    services = get_runtime(m).services(m)
    if json_out:
        print_json(
            {
                "project": m.project_name,
                "runtime": m.runtime,
                "mode": m.services.mode,
                "services": [s.to_dict() for s in services],
            }
        )
        return
    render_services(m, services)
