"""The root Typer app and its global options. `cli/__init__.py` registers every command on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__

app = typer.Typer(
    name="swiftdeploy",
    help="Policy-gated canary deployments on a single host: one manifest, generated compose + nginx, OPA decides.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's plain help: the text of docs/cli.md, no `<bool>` on flags, no Rich import
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swiftdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest",
            "-m",
            envvar="SWIFTDEPLOY_MANIFEST",
            help="Path of manifest.yaml (before or after the command).",
            show_default=True,
        ),
    ] = Path("manifest.yaml"),
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = {"manifest": manifest}


def debug_enabled() -> bool:
    return os.environ.get("SWIFTDEPLOY_DEBUG", "") not in ("", "0", "false", "no")
