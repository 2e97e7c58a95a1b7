"""`swiftdeploy plugins`: list plugins; and the hook that loads them into the root app (called by `cli.run`)."""

from __future__ import annotations

import sys

import typer

from .app import app


def load_once() -> None:
    """Load the plugins into `app` once per process and print one warning line per plugin that failed or was refused.

    Called from `cli.run`, the path both the console script and `python -m swiftdeploy` take, after the built-in
    command modules registered themselves (so clashes are seen).
    """
    from .. import plugins

    if plugins.loaded() is not None:
        return
    statuses = plugins.load_plugins(app)
    plugins.remember(statuses)
    for status in statuses:
        if status.warning:
            _warn(status.warning)


def _warn(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[33mwarning:\x1b[0m {message}\n")
    else:
        sys.stderr.write(f"warning: {message}\n")


@app.command("plugins")
def list_plugins(
    json_: bool = typer.Option(False, "--json", help="Print JSON only (an object with a `plugins` list)."),
) -> None:
    """List installed plugins (entry-point group `swiftdeploy.plugins`): loaded, failed, refused or disabled."""
    from .. import plugins
    from .common import print_json

    chosen = plugins.selection()
    statuses = plugins.loaded()
    if statuses is None:  # invoked without cli.run (e.g. a bare CliRunner): report without loading anything
        statuses = []
    if json_:
        print_json(
            {
                "group": plugins.GROUP,
                "enabled": chosen.enabled,
                "allow": sorted(chosen.allow) if chosen.allow is not None and chosen.enabled else None,
                "plugins": [s.to_dict() for s in statuses],
            }
        )
        return
    if not chosen.enabled:
        typer.echo(f"plugins are disabled ({plugins.ENV_VAR}={chosen.raw})")
        return
    if not statuses:
        typer.echo(f"no plugins installed (entry-point group {plugins.GROUP})")
        return
    rows = [("NAME", "STATUS", "VERSION", "ORIGIN")]
    rows += [(s.name, s.status, s.version or "-", s.origin) for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])
    for s in statuses:
        if s.error:
            typer.echo(f"  {s.name}: {s.error}")
