"""`swiftdeploy chaos slow --duration S | error --rate R | recover [--track canary]`."""

from __future__ import annotations

import typer

from .app import app

chaos_app = typer.Typer(help="Inject faults into a track through the admin listener (slow, error, recover).")
app.add_typer(chaos_app, name="chaos")

TRACK_HELP = "Track to act on: canary (default) or stable (stable accepts only recover)."


def _inject(ctx: typer.Context, track: str, mode: str, **values: float | None) -> None:
    from ..ops import chaos
    from .common import console, load

    result = chaos(load(ctx), track, mode, **values)
    state = result.state
    extra = {"slow": f" ({state.get('duration')}s per request)", "error": f" (rate {state.get('rate')})"}
    console().print(f"[green]✓[/green] {track}: chaos {state.get('mode', mode)}{extra.get(mode, '')}")


@chaos_app.command("slow")
def slow(
    ctx: typer.Context,
    duration: float = typer.Option(..., "--duration", help="Seconds each request sleeps (0 < S <= 30)."),
    track: str = typer.Option("canary", "--track", help=TRACK_HELP),
) -> None:
    """Make every request of the track sleep DURATION seconds."""
    _inject(ctx, track, "slow", duration=duration)


@chaos_app.command("error")
def error(
    ctx: typer.Context,
    rate: float = typer.Option(..., "--rate", help="Fraction of requests answered 500 (0 < R <= 1)."),
    track: str = typer.Option("canary", "--track", help=TRACK_HELP),
) -> None:
    """Answer a RATE fraction of the track's requests with HTTP 500."""
    _inject(ctx, track, "error", rate=rate)


@chaos_app.command("recover")
def recover(
    ctx: typer.Context,
    track: str = typer.Option("canary", "--track", help=TRACK_HELP),
) -> None:
    """Remove any injected fault."""
    _inject(ctx, track, "recover")
