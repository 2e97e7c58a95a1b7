"""`swiftdeploy promote canary` / `swiftdeploy promote stable [--window S]`."""

from __future__ import annotations

import typer

from .app import app

promote_app = typer.Typer(help="Start a canary beside stable, or make the canary the new stable (gated).")
app.add_typer(promote_app, name="promote")


@promote_app.command("canary")
def canary(
    ctx: typer.Context,
    timeout: float = typer.Option(60.0, "--timeout", min=1, max=3600, help="Seconds to wait for the canary."),
) -> None:
    """Infrastructure gate; mode canary in the manifest; start the canary; split traffic by canary.weight."""
    from ..ops import promote_canary
    from .common import manifest_path
    from .deploy import render_result, run_operation

    path = manifest_path(ctx)
    result = run_operation(
        lambda progress: promote_canary(path, progress=progress, timeout=timeout), title="promoting the canary"
    )
    render_result(result)


@promote_app.command("stable")
def stable(
    ctx: typer.Context,
    window: float | None = typer.Option(
        None,
        "--window",
        min=0.1,
        max=3600,
        help="Longest to watch the canary (s); it stops at the first clear verdict (default policy.window_seconds).",
    ),
    timeout: float = typer.Option(60.0, "--timeout", min=1, max=3600, help="Seconds to wait for the new stable."),
) -> None:
    """Watch the canary until the gate's verdict is clear; on allow it becomes stable, else nothing changes (exit 3)."""
    from ..ops import promote_stable
    from .common import manifest_path
    from .deploy import render_result, run_operation

    path = manifest_path(ctx)
    result = run_operation(
        lambda progress: promote_stable(path, window=window, progress=progress, timeout=timeout),
        title="promoting the canary to stable",
    )
    render_result(result)
