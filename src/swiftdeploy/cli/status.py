"""`swiftdeploy status`: the live dashboard (Rich Live), or one snapshot with --once / --json / a non-TTY stdout."""

from __future__ import annotations

import os
import sys
import time

import typer

from .app import app


@app.command()
def status(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (also when stdout is not a TTY)."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between refreshes."),
    json_output: bool = typer.Option(False, "--json", help="Print one snapshot as JSON (implies --once)."),
) -> None:
    """Live dashboard of both tracks and both policy verdicts; every refresh goes to history.jsonl.

    Per track: req/s, error rate, P50/P99 over the last interval and over the policy window, uptime, mode, chaos,
    health, trends; both policy domains with every violation. Ctrl-C quits (exit 0).

    One snapshot (--once, --json, or stdout not a terminal) scrapes twice, --interval apart, so its rates are
    real; exit 0 when every policy domain allows and the tracks answer, 3 when a domain denies or is
    inconclusive, 4 when the policy engine cannot answer, 1 when a track that should run is down."""
    from .. import dashboard
    from .common import load

    m = load(ctx)
    collector = dashboard.StatusCollector(m)
    if once or json_output or not sys.stdout.isatty():
        raise typer.Exit(_once(m, collector, interval, json_output))
    _live(m, collector, interval)


def _once(m, collector, interval: float, json_output: bool) -> int:
    from .. import dashboard, history
    from .common import console, print_json

    collector.collect()  # the baseline: counters are cumulative, rates need a second scrape
    time.sleep(interval)
    snapshot = collector.collect()
    history.append(m.history_path, "status", **snapshot.record())
    if json_output:
        print_json(snapshot.to_dict())
    else:
        out = console()
        if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
            out.width = 120  # piped or logged: Rich's 80-column default would squeeze the table
        out.print(dashboard.render(snapshot))
    return snapshot.exit_code()


def _live(m, collector, interval: float) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from .. import dashboard, history
    from ..errors import SwiftDeployError
    from .common import console

    out = console()
    try:
        with Live(Text("collecting baseline…"), console=out, auto_refresh=False, transient=False) as live:
            while True:
                started = time.monotonic()
                snapshot = collector.collect()
                view = dashboard.render(snapshot)
                try:
                    history.append(m.history_path, "status", **snapshot.record())
                except SwiftDeployError as exc:  # keep watching; say loudly that nothing is being recorded
                    view = Group(view, Text(f"history not recorded: {exc}", style="bold red"))
                footer = Text(f"refresh every {interval:g}s · Ctrl-C to quit", style="dim")
                live.update(Group(view, footer), refresh=True)
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a person leaves the dashboard: a clean exit 0
