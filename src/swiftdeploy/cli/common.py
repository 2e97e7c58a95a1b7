"""What the command modules share about their context: the manifest named by the global option."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..manifest import Manifest


def manifest_path(ctx: typer.Context) -> Path:
    root = ctx.find_root()
    return Path((root.obj or {}).get("manifest", "manifest.yaml"))


def load(ctx: typer.Context) -> Manifest:
    from ..manifest import load_manifest

    return load_manifest(manifest_path(ctx))
