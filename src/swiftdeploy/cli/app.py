"""The root Typer app and the global options. Command modules attach themselves to `app`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from .. import __version__

app = typer.Typer(
    name="swiftdeploy",
    help="Policy-gated canary deployments on a single host: one manifest, generated compose + nginx, OPA decides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swiftdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    manifest: Path = typer.Option(
        Path("manifest.yaml"),
        "--manifest",
        "-m",
        envvar="SWIFTDEPLOY_MANIFEST",
        help="Path of manifest.yaml.",
        show_default=True,
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    ctx.obj = {"manifest": manifest}


def debug_enabled() -> bool:
    return os.environ.get("SWIFTDEPLOY_DEBUG", "") not in ("", "0", "false", "no")
