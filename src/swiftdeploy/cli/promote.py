"""`swiftdeploy promote canary [--json]` / `swiftdeploy promote stable [--window S] [--json]` (library:
`ops/promote.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag

app = typer.Typer(help="Start a canary beside stable, or make the canary the new stable (gated).")


@app.command("canary")
def canary(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, max=3600, help="Seconds to wait for the canary.")
    ] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Infrastructure gate; mode canary in the manifest; start the canary; split traffic by canary.weight."""
    from ..ops import promote_canary
    from .common import manifest_path
    from .output import operate

    operate(promote_canary, manifest_path(ctx), title="promoting the canary", json_out=json_out, timeout=timeout)


@app.command("stable")
def stable(
    ctx: typer.Context,
    window: Annotated[
        float | None,
        typer.Option(
            "--window",
            min=0.1,
            max=3600,
            help="Longest to watch the canary (s); it stops at the first clear verdict "
            "(default policy.window_seconds).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, max=3600, help="Seconds to wait for the new stable.")
    ] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Watch the canary until the gate's verdict is clear; on allow it becomes stable, else nothing changes (exit 3)."""
    from ..ops import promote_stable
    from .common import manifest_path
    from .output import operate

    operate(
        promote_stable,
        manifest_path(ctx),
        title="promoting the canary to stable",
        json_out=json_out,
        window=window,
        timeout=timeout,
    )
