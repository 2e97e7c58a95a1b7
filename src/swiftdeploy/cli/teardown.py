"""`swiftdeploy teardown [--clean]`."""

from __future__ import annotations

import typer

from .app import app


@app.command()
def teardown(
    ctx: typer.Context,
    clean: bool = typer.Option(False, "--clean", help="Also delete the generated files and the state folder."),
) -> None:
    """Stop and remove everything the deploy started (history.jsonl is kept)."""
    from ..ops import teardown as run_teardown
    from .common import manifest_path
    from .deploy import render_result, run_operation

    path = manifest_path(ctx)
    render_result(run_operation(lambda progress: run_teardown(path, clean=clean, progress=progress), title="teardown"))
