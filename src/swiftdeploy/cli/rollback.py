"""`swiftdeploy rollback`: remove the canary, all traffic to stable. Never gated (library: `ops/rollback.py`)."""

from __future__ import annotations

import typer


def rollback(ctx: typer.Context) -> None:
    """Remove the canary, send all traffic to stable, set mode stable. Never gated."""
    from ..ops import rollback as run_rollback
    from .common import manifest_path
    from .output import render_result, run_operation

    path = manifest_path(ctx)
    render_result(run_operation(lambda progress: run_rollback(path, progress=progress), title="rolling back"))
