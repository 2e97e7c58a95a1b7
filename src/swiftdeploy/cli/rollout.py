"""`swiftdeploy rollout [--pause-on-interrupt] [--timeout S] [--json]` and `swiftdeploy abort [--timeout S]
[--json]` (library: `ops/rollout.py`, `ops/abort.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag


def rollout(
    ctx: typer.Context,
    pause_on_interrupt: Annotated[
        bool,
        typer.Option("--pause-on-interrupt", help="Ctrl-C pauses at the current step instead of rolling back."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, max=3600, help="Seconds to wait for the canary and the new stable.")
    ] = 60.0,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="JSON Lines on stdout: every step change and verdict as it happens, then the result (or the error "
            "and its exit_code).",
        ),
    ] = False,
) -> None:
    """Ramp the canary up by canary.steps, judging every step; promote it after the last, roll it back when a step
    is denied (exit 3). Inconclusive at a step's end: canary.analysis.on_inconclusive (pause: exit 5, run it again
    to resume)."""
    from ..ops import rollout as run
    from .common import manifest_path
    from .output import run_rollout

    run_rollout(run, manifest_path(ctx), json_out=json_out, pause_on_interrupt=pause_on_interrupt, timeout=timeout)


def abort(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, max=600, help="Seconds to wait for the running operation's answer.")
    ] = 30.0,
    json_out: JsonFlag = False,
) -> None:
    """Stop a running rollout or promote stable from another terminal (it rolls the canary back and exits 3), or
    roll back a paused rollout. Exit 1 when there is nothing to abort."""
    from ..ops import abort as run
    from .common import manifest_path
    from .output import operate

    operate(run, manifest_path(ctx), title="aborting", json_out=json_out, timeout=timeout)
