"""swiftdeploy-hello: an example plugin. `swiftdeploy hello facts` prints the host facts the deploy policy sees.

The plugin contract is one entry point (see pyproject.toml) naming the Typer app below. Keep the top level light:
the CLI imports this module on every start, so import swiftdeploy's library API inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

__version__ = "0.1.0"

app = typer.Typer(help="Example plugin: show what swiftdeploy's policy sees on this host.", no_args_is_help=True)


@app.command()
def facts(
    ctx: typer.Context,
    path: Path | None = typer.Option(
        None, "--path", help="Folder whose disk is measured (default: the manifest's folder, as the deploy gate)."
    ),
    json_: bool = typer.Option(False, "--json", help="Print only the facts as JSON (a ready policy input)."),
) -> None:
    """Print the host facts the infrastructure policy evaluates before a deploy (disk, CPU load, memory)."""
    import swiftdeploy
    from swiftdeploy.plugins import manifest_path

    if path is None:
        manifest = manifest_path(ctx)
        # Without a manifest there is nothing deployed yet: measure the current folder.
        path = swiftdeploy.load_manifest(manifest).base_dir if manifest.exists() else Path.cwd()
    found = swiftdeploy.host_facts(path)
    if json_:
        typer.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in found)
    for key in sorted(found):
        typer.echo(f"{key.ljust(width)}  {found[key]}")
