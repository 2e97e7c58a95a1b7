"""`swiftdeploy new [--runtime local|docker|swarm] [--force]`: write a commented starter manifest (library:
`starter.py`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class RuntimeChoice(StrEnum):
    local = "local"
    docker = "docker"
    swarm = "swarm"


def new(
    ctx: typer.Context,
    runtime: Annotated[
        RuntimeChoice,
        typer.Option(
            "--runtime",
            help="local: processes on 127.0.0.1 behind the real nginx (runs the bundled demo API as written). "
            "docker: a compose stack. swarm: a stack on a Docker Swarm cluster, run from a manager.",
        ),
    ] = RuntimeChoice.local,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing manifest.")] = False,
) -> None:
    """Write a commented starter manifest.yaml (or -m PATH) that validates and deploys as written."""
    from ..starter import write_starter
    from .common import manifest_path
    from .output import out

    path = write_starter(manifest_path(ctx), runtime.value, force=force)
    console = out()
    console.print(f"wrote {path} ({runtime.value} runtime)", soft_wrap=True, markup=False)
    flag = "" if str(path) == "manifest.yaml" else f" -m {path}"
    console.print(f"next: swiftdeploy{flag} validate, then swiftdeploy{flag} deploy", soft_wrap=True, markup=False)
