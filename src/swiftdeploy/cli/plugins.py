"""`swiftdeploy plugins`: list plugins; and the hook that loads them into the root app (called by `cli.run`)."""

from __future__ import annotations

from typing import Annotated

import typer


def load_once(app: typer.Typer) -> None:
    """Load the plugins into `app` once per process and print one warning line per plugin that failed or was refused.

    Called from `cli.run`, the path both the console script and `python -m swiftdeploy` take, after the built-in
    commands are registered (so clashes are seen).
    """
    from .. import plugins

    if plugins.loaded() is not None:
        return
    statuses = plugins.load_plugins(app)
    plugins.remember(statuses)
    warnings = [status.warning for status in statuses if status.warning]
    if warnings:
        from .output import warning

        for message in warnings:
            warning(message)


def list_plugins(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON only (an object with a `plugins` list).")] = False,
) -> None:
    """List installed plugins (entry-point group `swiftdeploy.plugins`): loaded, failed, refused or disabled."""
    from .. import plugins
    from .output import print_json

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
