"""`swiftdeploy chaos slow --duration S | error --rate R | recover [--track canary]` (library: `ops/chaos.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Inject faults into a track through the admin listener (slow, error, recover).")

Track = Annotated[
    str,
    typer.Option("--track", help="Track to act on: canary (default) or stable (stable accepts only recover)."),
]
Duration = Annotated[float, typer.Option("--duration", help="Seconds each request sleeps (0 < S <= 30).")]
Rate = Annotated[float, typer.Option("--rate", help="Fraction of requests answered 500 (0 < R <= 1).")]


def _inject(ctx: typer.Context, track: str, mode: str, **values: float | None) -> None:
    from ..format import format_number
    from ..ops import chaos
    from .common import load
    from .output import out

    result = chaos(load(ctx), track, mode, **values)
    state = result.state
    extra = {
        "slow": f" ({format_number(state.get('duration'))}s per request)",
        "error": f" (rate {format_number(state.get('rate'))})",
    }
    out().print(f"[green]✓[/green] {track}: chaos {state.get('mode', mode)}{extra.get(mode, '')}")


@app.command("slow")
def slow(ctx: typer.Context, duration: Duration, track: Track = "canary") -> None:
    """Make every request of the track sleep DURATION seconds."""
    _inject(ctx, track, "slow", duration=duration)


@app.command("error")
def error(ctx: typer.Context, rate: Rate, track: Track = "canary") -> None:
    """Answer a RATE fraction of the track's requests with HTTP 500."""
    _inject(ctx, track, "error", rate=rate)


@app.command("recover")
def recover(ctx: typer.Context, track: Track = "canary") -> None:
    """Remove any injected fault."""
    _inject(ctx, track, "recover")
