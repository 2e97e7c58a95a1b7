"""rollback (never gated) and teardown."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from .base import FileTxn, Operation, OpResult, Progress, failure_event


def rollback(manifest_path: Path | str, progress: Progress | None = None) -> OpResult:
    """All public traffic back to stable, the canary removed, mode stable. Works with the canary already dead."""
    with Operation(manifest_path, "rollback", progress) as op:
        m, result = op.m, op.result
        result.mode_from, result.mode_to = m.services.mode, "stable"
        result.image, result.version = m.services.image, m.services.version
        with failure_event(op, "rollback_failed"):
            txn = FileTxn(m, {("services", "mode"): "stable"})
            m_new = txn.m_new
            result.generated = [str(p) for p in txn.commit()]
            states = op.runtime.health(m)
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
        op.snapshot_services(m_new)
        had_canary = m.services.mode == "canary" or m.canary_name in states
        result.message = (
            f"rolled back: {m.canary_name} removed, all traffic to stable ({m.services.version})"
            if had_canary
            else "nothing to roll back: no canary was running; mode is stable"
        )
        op.event("rollback", mode_from=m.services.mode, mode_to="stable", image=m.services.image,
                 version=m.services.version)  # fmt: skip
        return result


def teardown(manifest_path: Path | str, clean: bool = False, progress: Progress | None = None) -> OpResult:
    """Stop and remove everything the deploy started. `clean`: also delete the generated files and the state
    folder (history.jsonl stays: it is the audit trail)."""
    from .. import generate

    with Operation(manifest_path, "teardown", progress) as op:
        m, result = op.m, op.result
        op.progress(f"stopping the {op.runtime.name} stack")
        with failure_event(op, "teardown_failed", clean=clean):
            result.details = op.runtime.down(m)
            if clean:
                op.progress("deleting generated files and the state folder")
                removed = []
                for relpath in generate.files(m):
                    path = m.out_dir / relpath
                    if path.exists():
                        path.unlink()
                        removed.append(str(path))
                bundle = m.out_dir / "policy-bundle"
                for folder in [*sorted((p for p in bundle.rglob("*") if p.is_dir()), reverse=True), bundle]:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only when empty (system/ first): a person's own files there stay
                result.generated = removed
                for name in ("pids", "logs", "nginx"):
                    shutil.rmtree(m.state_dir / name, ignore_errors=True)
                op.lock.remove_on_release = True
        result.message = f"stopped {len(result.details)} process(es)/container(s)" + (
            "; generated files and state removed" if clean else ""
        )
        op.event("teardown", clean=clean, stopped=result.details)
        return result
