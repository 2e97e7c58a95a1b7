"""`swiftdeploy lock status | release [--force]`: the deploy lock of a manifest (library: `lock.inspect`,
`lock.release`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag

app = typer.Typer(help="Who holds the deploy lock of this manifest and since when; release a stale one.")


@app.command("status")
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the lock's state as JSON on stdout.")] = False,
) -> None:
    """free, held (by which pid, host and command, since when) or stale (a run died holding it). Exit 0."""
    from .. import lock
    from .common import existing_manifest
    from .output import print_json, render_lock

    found = lock.inspect(lock.state_dir_of(existing_manifest(ctx)))
    if json_out:
        print_json(found.to_dict())
        return
    render_lock(found)


@app.command("release")
def release(
    ctx: typer.Context,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also break the lock of a live (hung) run; it keeps running, unsignalled."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Clear a stale lock (its run is gone). A live run's lock is refused (exit 1, naming it) unless --force."""
    from .. import lock
    from .common import existing_manifest
    from .output import json_answer, print_json, render_lock, success_document

    with json_answer("lock release", json_out):
        before = lock.release(lock.state_dir_of(existing_manifest(ctx)), force=force)
    if json_out:
        data = {"released": before.state != "free", "forced": force, "before": before.to_dict()}
        print_json(success_document("lock release", data))
        return
    render_lock(before, released=True, forced=force)
