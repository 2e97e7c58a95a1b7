"""`swiftdeploy init [--check] [--dry-run]`: write the generated files from the manifest (library: `generate.py`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..generate import Change
    from ..manifest import Manifest


def init(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 with a unified diff when the files on disk differ (drift)."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff of what would change; write nothing.")
    ] = False,
) -> None:
    """Validate the manifest and write docker-compose.yml, nginx.conf and the policy bundle."""
    from .. import generate
    from ..errors import DriftDetected, InvalidInput
    from .common import load
    from .output import out as stdout

    if check and dry_run:
        raise InvalidInput("--check and --dry-run cannot be combined", hint="use one of them")
    m = load(ctx)  # an invalid manifest raises here, before anything is rendered or written
    changes = generate.plan(m)
    diff = "".join(change.diff() for change in changes)
    if check or dry_run:
        sys.stdout.write(diff)
        sys.stdout.flush()
        if check and diff:
            stale = ", ".join(c.relpath for c in changes if c.changed)
            raise DriftDetected(
                f"generated files differ from {m.source_path.name if m.source_path else 'the manifest'}: {stale}",
                hint="run `swiftdeploy init` to regenerate them; edit the manifest, not the generated files",
            )
        if dry_run and not diff:
            sys.stderr.write("nothing would change\n")
        return

    generate.write(m, changes)
    from rich.markup import escape

    out = stdout()
    for change in changes:
        style = "green" if change.changed else "dim"
        out.print(f"[{style}]{change.status:>9}[/{style}] {change.relpath}", soft_wrap=True)
    out.print(f"[dim]in {escape(str(m.out_dir))}[/dim]", soft_wrap=True)
    _record(m, changes)


def _record(m: Manifest, changes: list[Change]) -> None:
    from ..history import append

    append(
        m.history_path,
        "init",
        rotation=m.history.rotation,
        files=[c.relpath for c in changes if c.changed],
        unchanged=[c.relpath for c in changes if not c.changed],
        manifest_sha256=m.sha256,
    )
