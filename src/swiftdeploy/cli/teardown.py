"""`swiftdeploy teardown [--clean] [--json]` (library: `ops.teardown`, in `ops/rollback.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag


def teardown(
    ctx: typer.Context,
    clean: Annotated[
        bool, typer.Option("--clean", help="Also delete the generated files and the state folder.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Stop and remove everything the deploy started (history.jsonl is kept)."""
    from ..ops import teardown as run_teardown
    from .common import manifest_path
    from .output import operate

    operate(run_teardown, manifest_path(ctx), title="teardown", json_out=json_out, clean=clean)
