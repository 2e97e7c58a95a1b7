"""rollback (never gated) and teardown.

Neither reports or records what it did not do: a rollback with no canary and a teardown with nothing running
change nothing, say so, and write no history record (docs/operations.md#rollback).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RuntimeUnavailable
from ..fsutil import remove_stale_tmp
from ..hooks import run_hooks
from .base import FileTxn, Operation, OpResult, Progress, failure_event

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..runtime.base import ServiceHealth

NOT_RUNNING = ": not running"  # the end of a `Runtime.down` line for a service that was already gone


def rollback(manifest_path: Path | str, progress: Progress | None = None) -> OpResult:
    """All public traffic back to stable, the canary removed, mode stable. Works with the canary already dead."""
    with Operation(manifest_path, "rollback", progress) as op:
        m, result = op.m, op.result
        result.mode_from, result.mode_to = m.services.mode, "stable"
        result.image, result.version = m.services.image, m.services.version
        with failure_event(op, "rollback_failed"):
            states = op.runtime.health(m)
            if m.services.mode != "canary" and m.canary_name not in states:
                result.message = "nothing to roll back: mode is stable and no canary runs; nothing was changed"
                op.snapshot_services()
                return result
            m_new = remove_canary(op, m, states)
        op.snapshot_services(m_new)
        result.message = f"rolled back: {m.canary_name} removed, all traffic to stable ({m.services.version})"
        op.event("rollback", mode_from=m.services.mode, mode_to="stable", image=m.services.image,
                 version=m.services.version)  # fmt: skip
        run_hooks(op, "post_rollback")
        return result


def remove_canary(op: Operation, m: Manifest, states: dict[str, ServiceHealth] | None = None) -> Manifest:
    """What a rollback does once it knows there is a canary (also `rollout`'s and `abort`'s automatic rollback): mode
    stable in the manifest (and the generated files), all public traffic to stable (graceful reload), then the
    canary removed. Returns the edited manifest; a failed reload restores the files."""
    states = op.runtime.health(m) if states is None else states
    txn = FileTxn(m, {("services", "mode"): "stable"})
    m_new = txn.m_new
    op.result.generated = [str(p) for p in txn.commit()]
    try:
        if "nginx" in states and states["nginx"].running:
            op.progress("sending all public traffic to stable")
            op.runtime.reload_proxy(m_new)
        else:
            op.warn("nginx is not running: only the canary is removed (run `swiftdeploy deploy` to start)")
    except BaseException:
        txn.rollback()
        raise
    op.progress(f"removing {m.canary_name}")
    op.runtime.stop_track(m_new, "canary")
    return m_new


def teardown(manifest_path: Path | str, clean: bool = False, progress: Progress | None = None) -> OpResult:
    """Stop and remove everything the deploy started, and set the manifest's mode back to stable (the canary is
    gone, so the next deploy starts stable alone). `clean`: also delete the generated files and the state folder
    (history.jsonl stays: it is the audit trail); without a reachable engine it still deletes them, then fails
    saying what it could not stop."""
    from .. import generate

    with Operation(manifest_path, "teardown", progress) as op:
        m, result = op.m, op.result
        result.mode_from = m.services.mode
        with failure_event(op, "teardown_failed", clean=clean):
            unreachable: RuntimeUnavailable | None = None
            try:
                result.details = op.runtime.down(m)
            except RuntimeUnavailable as exc:
                if not clean:
                    raise
                unreachable = exc
            stopped = [line for line in result.details if not line.endswith(NOT_RUNNING)]
            if m.services.mode == "canary":
                op.progress("setting services.mode: stable in the manifest (the canary was torn down)")
                txn = FileTxn(m, {("services", "mode"): "stable"})
                result.generated = [str(p) for p in txn.commit()]
            elif not clean:
                # an earlier run killed between its manifest edit and its generated files: they follow the manifest
                stale = [c for c in generate.plan(m) if c.changed and c.old is not None]
                result.generated = [str(p) for p in generate.write(m, stale)]
            result.mode_to = "stable"
            removed = _clean(op) if clean else []
            if unreachable is not None:
                raise RuntimeUnavailable(
                    "teardown --clean deleted the generated files and the state folder but could not stop the "
                    f"{op.runtime.name} stack: {unreachable.message}",
                    hint="once the engine answers, `swiftdeploy init` then `swiftdeploy teardown --clean` removes "
                    "what is left of the stack (its containers restart with the engine)",
                )
        rewritten = len(result.generated) if m.services.mode != "canary" else 0
        result.message = _teardown_message(
            len(stopped), len(result.details) - len(stopped), m.services.mode, removed, rewritten
        )
        if stopped or removed or m.services.mode == "canary" or result.generated:
            mode = {"mode_from": "canary", "mode_to": "stable"} if m.services.mode == "canary" else {}
            op.event("teardown", clean=clean, stopped=result.details, removed=removed, **mode)
        return result


def _clean(op: Operation) -> list[str]:
    """Delete the generated files and the state folder; the paths removed (history.jsonl stays)."""
    from .. import generate

    m = op.m
    op.progress("deleting generated files and the state folder")
    removed = []
    for relpath in generate.files(m):
        path = m.out_dir / relpath
        if path.exists():
            path.unlink()
            removed.append(str(path))
    bundle = m.out_dir / "policy-bundle"
    # the temp files of writes a killed run never finished (manifest, generated files, bundle, state)
    folders = {m.base_dir, m.out_dir, m.state_dir, bundle, *(p for p in bundle.rglob("*") if p.is_dir())}
    for folder in sorted(folders):
        removed += [str(path) for path in remove_stale_tmp(folder, every_file=True)]
    for folder in [*sorted((p for p in bundle.rglob("*") if p.is_dir()), reverse=True), bundle]:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty (system/ first): a person's own files there stay
    for name in ("pids", "logs", "nginx"):
        folder = m.state_dir / name
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    record = m.state_dir / "releases.json"  # undo's memory of earlier stables (history keeps them too)
    if record.is_file():
        record.unlink()
        removed.append(str(record))
    op.lock.remove_on_release = True
    return removed


def _teardown_message(stopped: int, stale: int, mode: str, removed: list[str], rewritten: int = 0) -> str:
    parts = []
    if stopped:
        parts.append(f"stopped {stopped} process(es)/container(s)")
    if stale:
        parts.append(f"removed {stale} stale pid file(s) of processes that were not running")
    if mode == "canary":
        parts.append("manifest mode set back to stable")
    if removed:
        parts.append("generated files and state removed")
    if rewritten:
        parts.append(f"rewrote {rewritten} generated file(s) that did not match the manifest (an interrupted run)")
    if not parts:
        return "nothing to tear down: no process or container of this stack was running; nothing was changed"
    return "; ".join(parts)
