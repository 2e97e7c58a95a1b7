"""`swiftdeploy rollback [--json]`: remove the canary, all traffic to stable. Never gated (library:
`ops/rollback.py`)."""

from __future__ import annotations

import typer

from .common import JsonFlag


def rollback(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Remove the canary, send all traffic to stable, set mode stable. Never gated."""
    from ..ops import rollback as run_rollback
    from .common import manifest_path
    from .output import operate

    operate(run_rollback, manifest_path(ctx), title="rolling back", json_out=json_out)
