"""`swiftdeploy rollback`: remove the canary, all traffic to stable. Never gated (library: `ops/rollback.py`)."""

from __future__ import annotations

import typer


def rollback(ctx: typer.Context) -> None:
    """Remove the canary, send all traffic to stable, set mode stable. Never gated."""
    from ..ops import rollback as run_rollback
    from .common import manifest_path
    from .output import operate

    operate(run_rollback, manifest_path(ctx), title="rolling back")
