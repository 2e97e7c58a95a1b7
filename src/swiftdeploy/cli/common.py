"""Helpers shared by the command modules: the manifest from the global option, consoles, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ..manifest import Manifest


def manifest_path(ctx: typer.Context) -> Path:
    root = ctx.find_root()
    return Path((root.obj or {}).get("manifest", "manifest.yaml"))


def load(ctx: typer.Context) -> Manifest:
    from ..manifest import load_manifest

    return load_manifest(manifest_path(ctx))


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Machine output: JSON only on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
