"""`swiftdeploy teardown [--clean]` (library: `ops.teardown`, in `ops/rollback.py`)."""

from __future__ import annotations

from typing import Annotated

import typer


def teardown(
    ctx: typer.Context,
    clean: Annotated[
        bool, typer.Option("--clean", help="Also delete the generated files and the state folder.")
    ] = False,
) -> None:
    """Stop and remove everything the deploy started (history.jsonl is kept)."""
    from ..ops import teardown as run_teardown
    from .common import manifest_path
    from .output import operate

    operate(run_teardown, manifest_path(ctx), title="teardown", clean=clean)
