"""What the command modules share about their context: the manifest named by `-m/--manifest` (before or after the
command), and the `--json` flag of the commands that act."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..manifest import Manifest

# `--json` of every command that acts (deploy, promote, rollback, teardown, chaos, traffic, lock release): the
# result on stdout, also when it fails, is blocked or is interrupted (output.json_answer).
JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the result as JSON on stdout; on failure the error and its exit_code (stdout only)."
    ),
]


def manifest_path(ctx: typer.Context) -> Path:
    root = ctx.find_root()
    return Path((root.obj or {}).get("manifest", "manifest.yaml"))


def load(ctx: typer.Context) -> Manifest:
    from ..manifest import load_manifest

    return load_manifest(manifest_path(ctx))


def existing_manifest(ctx: typer.Context) -> Path:
    """The manifest's path when the file exists (it need not be valid); the usual not-found error (exit 2) else."""
    path = manifest_path(ctx)
    if not path.is_file():
        load(ctx)  # raises ManifestError naming the path and the fix
    return path
