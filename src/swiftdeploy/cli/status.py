"""`swiftdeploy status`: the live dashboard (Rich Live), or one snapshot with --once / --json / a non-TTY stdout.
Library: `dashboard.py` (the collector and the refresh loop); the rendering is `output.render_snapshot`."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..dashboard import StatusCollector


def status(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit (also when stdout is not a TTY).")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 2.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one snapshot as JSON (implies --once).")] = False,
) -> None:
    """Live dashboard of both tracks and both policy verdicts, recorded in history.jsonl.

    Per track: req/s, error rate, P50/P99 over the last interval and over the policy window, uptime, mode, chaos,
    health, trends; both policy domains with every violation. The manifest is re-read when it changes (mode,
    thresholds, window). A status record is written when something changed, else every history.status_every
    seconds, each covering the time since the previous one. Ctrl-C quits (exit 0).

    One snapshot (--once, --json, or stdout not a terminal) scrapes twice, --interval apart, so its rates are
    real, and is always recorded; exit 1 when a track that should run is down or starting (an outage, whatever
    the policy says), else 0 when every policy domain allows, 3 when a domain denies or is inconclusive, 4 when
    the policy engine cannot answer."""
    from .. import dashboard
    from .common import load

    collector = dashboard.StatusCollector(load(ctx))
    if once or json_output or not sys.stdout.isatty():
        raise typer.Exit(_once(collector, interval, json_output))
    _live(collector, interval)


def _once(collector: StatusCollector, interval: float, json_output: bool) -> int:
    from .. import dashboard
    from .output import out, print_json, render_snapshot

    snapshot = dashboard.snapshot(collector, interval)
    if json_output:
        print_json(snapshot.to_dict())
    else:
        console = out()
        if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
            console.width = 120  # piped or logged: Rich's 80-column default would squeeze the table
        console.print(render_snapshot(snapshot))
    return snapshot.exit_code()


def _live(collector: StatusCollector, interval: float) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from .. import dashboard
    from .output import out, render_snapshot

    footer = Text(f"refresh every {interval:g}s · Ctrl-C to quit", style="dim")
    try:
        with Live(Text("collecting baseline…"), console=out(), auto_refresh=False, transient=False) as live:
            for refresh in dashboard.refreshes(collector, interval):
                view = render_snapshot(refresh.snapshot)
                if refresh.record_error is not None:  # keep watching; say loudly that nothing is being recorded
                    view = Group(view, Text(f"history not recorded: {refresh.record_error}", style="bold red"))
                live.update(Group(view, footer), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a person leaves the dashboard: a clean exit 0
