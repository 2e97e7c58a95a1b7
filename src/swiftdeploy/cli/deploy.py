"""`swiftdeploy deploy [--timeout S] [--json] [--direct]` (library: `ops/deploy.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag


def deploy(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option("--timeout", min=1, max=3600, help="Seconds to wait until healthy.")] = 60.0,
    json_out: JsonFlag = False,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="Let a new services.version or services.image replace the running stable without a canary "
            "(the policy denies it otherwise; see `promote canary`).",
        ),
    ] = False,
) -> None:
    """Write generated files, pass the infrastructure gate, start the stack and wait until healthy."""
    from ..ops import deploy as run_deploy
    from .common import manifest_path
    from .output import operate

    operate(run_deploy, manifest_path(ctx), title="deploying", json_out=json_out, timeout=timeout, direct=direct)
