"""`swiftdeploy chaos slow --duration S | error --rate R | recover [--track canary] [--json]` (library:
`ops/chaos.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag

app = typer.Typer(help="Inject faults into a track through the admin listener (slow, error, recover).")

Track = Annotated[
    str,
    typer.Option("--track", help="Track to act on: canary (default) or stable (stable accepts only recover)."),
]
Duration = Annotated[float, typer.Option("--duration", help="Seconds each request sleeps (0 < S <= 30).")]
Rate = Annotated[float, typer.Option("--rate", help="Fraction of requests answered 500 (0 < R <= 1).")]


def _inject(ctx: typer.Context, track: str, mode: str, json_out: bool, **values: float | None) -> None:
    from ..format import format_number
    from ..ops import chaos
    from .common import load
    from .output import json_answer, out, print_json, success_document

    with json_answer("chaos", json_out):
        result = chaos(load(ctx), track, mode, **values)
    if json_out:
        print_json(success_document("chaos", result.to_dict()))
        return
    state = result.state
    extra = {
        "slow": f" ({format_number(state.get('duration'))}s per request)",
        "error": f" (rate {format_number(state.get('rate'))})",
    }
    where = f" on all {result.replicas} replicas" if result.replicas > 1 else ""
    out().print(f"[green]✓[/green] {track}: chaos {state.get('mode', mode)}{extra.get(mode, '')}{where}")


@app.command("slow")
def slow(ctx: typer.Context, duration: Duration, track: Track = "canary", json_out: JsonFlag = False) -> None:
    """Make every request of the track sleep DURATION seconds."""
    _inject(ctx, track, "slow", json_out, duration=duration)


@app.command("error")
def error(ctx: typer.Context, rate: Rate, track: Track = "canary", json_out: JsonFlag = False) -> None:
    """Answer a RATE fraction of the track's requests with HTTP 500."""
    _inject(ctx, track, "error", json_out, rate=rate)


@app.command("recover")
def recover(ctx: typer.Context, track: Track = "canary", json_out: JsonFlag = False) -> None:
    """Remove any injected fault."""
    _inject(ctx, track, "recover", json_out)
