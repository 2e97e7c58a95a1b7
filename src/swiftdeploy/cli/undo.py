"""`swiftdeploy undo [--to VERSION] [--timeout S] [--json]`: stable back on the version the last promotion replaced.
Never gated (library: `ops/undo.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag


def undo(
    ctx: typer.Context,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="VERSION", help="An earlier recorded version (default: the one replaced last)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, max=3600, help="Seconds to wait for each restarted app.")
    ] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Bring back the stable version a `promote stable` replaced, blue/green. Never gated."""
    from ..ops import undo as run_undo
    from .common import manifest_path
    from .output import operate

    operate(run_undo, manifest_path(ctx), title="undoing the last promotion", json_out=json_out, to=to,
            timeout=timeout)  # fmt: skip
