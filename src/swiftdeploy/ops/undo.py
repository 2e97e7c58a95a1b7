"""undo: bring back the stable version a promotion replaced. Never gated, like rollback (docs/operations.md, "undo").

Every `promote stable` that replaces stable calls `record_release` once it succeeded: the replaced image, version and
command go to the release record (swiftdeploy.releases, `.swiftdeploy/releases.json`, the last 10) and to history
(`release_recorded`). `undo` takes the newest one (`--to VERSION`: the newest with that version), and replaces stable
with it the way `promote stable` replaces stable, so no request is lost on either runtime:

1. handover: the manifest gets mode canary with the recorded version as the canary (FileTxn); the canary starts and
   must be healthy; nginx sends every route to it (`reload_proxy(all_to_canary=True)`): from here every request is
   answered by the version being restored, and the stable app gets none;
2. switch-over (the steps of `promote stable` after its gate): services.image/version/command become the recorded
   ones and the mode stable (FileTxn); stable restarts on them (docker recreates it, local starts it blue/green)
   and must be healthy; nginx gets the final stable-only config; the canary goes.

A failure in step 1 puts the manifest and files back and removes the canary; in step 2 before stable runs the
restored version, the files go back and the runtime converges back (stable on the version it ran, the canary
removed). The record loses the restored entry and every newer one only once stable runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, OperationFailed
from ..hooks import run_hooks
from .base import FileTxn, Operation, OpResult, Progress, failure_event

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..releases import Release


def record_release(op: Operation, m: Manifest) -> None:
    """After `promote stable` replaced m's stable (m: the manifest before the promotion) by its canary: record the
    replaced version for `undo`, in history (`release_recorded`) and in the release record. Never fails the
    promotion that already happened: a problem is a warning."""
    from .. import history, releases

    before = (m.services.image, m.services.version, m.services.command)
    if before == (m.canary_image, m.canary_version, m.canary.command or m.services.command):
        return  # the same release again: nothing to go back to
    fields = {
        "image": m.services.image,
        "version": m.services.version,
        "command": list(m.services.command) if m.services.command else None,
        "replaced_by_image": m.canary_image,
        "replaced_by_version": m.canary_version,
    }
    try:
        rotation = m.history.rotation
        record = history.append(m.history_path, "release_recorded", rotation=rotation, runtime=m.runtime, **fields)
        path = releases.path_of(m)
        kept = releases.read(path)
        entry = releases.Release(**fields, replaced_at=record["ts"])
        releases.write(path, [*kept, entry])
    except Exception as exc:  # noqa: BLE001 - the promotion is done; only undo's memory of it is missing
        op.warn(f"`swiftdeploy undo` will not know {m.services.version} ran before: {exc}")


def _pick(recorded: list[Release], to: str | None) -> int:
    """Index of the release to restore: the newest, or the newest with version `to`."""
    if to is None:
        return len(recorded) - 1
    for index in range(len(recorded) - 1, -1, -1):
        if recorded[index].version == to:
            return index
    shown = ", ".join(r.version for r in recorded)
    raise InvalidInput(f"--to {to}: no such version on record (on record, oldest first: {shown})")


def _handover_values(m: Manifest, target: Release) -> dict[tuple[str, ...], Any]:
    """Mode canary with the recorded release as the canary (its command too: unset means the default app, so a
    services.command the promotion brought goes as well)."""
    values: dict[tuple[str, ...], Any] = {
        ("services", "mode"): "canary",
        ("canary", "image"): target.image,
        ("canary", "version"): target.version,
    }
    if m.canary_command != target.command:
        values[("canary", "command")] = list(target.command) if target.command else None
        if not target.command:
            values[("services", "command")] = None
    return values


def _final_values(m_handover: Manifest, target: Release) -> dict[tuple[str, ...], Any]:
    values: dict[tuple[str, ...], Any] = {
        ("services", "image"): target.image,
        ("services", "version"): target.version,
        ("services", "mode"): "stable",
    }
    if m_handover.services.command != target.command:
        values[("services", "command")] = list(target.command) if target.command else None
    return values


def undo(
    manifest_path: Path | str,
    to: str | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> OpResult:
    """Replace stable by the version the last promotion replaced (`to`: the newest recorded one with that version).

    Not gated. OperationFailed (exit 1) when nothing is on record, a canary runs (roll it back or promote it first),
    or the record is damaged; InvalidInput (exit 2) when `to` is not on record.
    """
    from .. import releases
    from ..runtime import service_of
    from .promote import _require_healthy, _track_answer

    with Operation(manifest_path, "undo", progress) as op:
        m, result = op.m, op.result
        path = releases.path_of(m)
        recorded = releases.read(path)
        if not recorded:
            raise OperationFailed(
                f"nothing to undo: no earlier stable version is on record ({path} "
                + ("is empty)" if path.exists() else "does not exist)"),
                hint="each `promote stable` records the version it replaces (`teardown --clean` forgets them)",
            )
        if m.services.mode == "canary":
            raise OperationFailed(
                f"a canary runs ({m.canary_name}, {m.canary_version}): undo replaces stable only in stable mode",
                hint="end the canary first: `swiftdeploy rollback` (or `swiftdeploy promote stable`), then undo",
            )
        index = _pick(recorded, to)
        target = recorded[index]
        running = (m.services.image, m.services.version, m.services.command)
        if (target.image, target.version, target.command) == running:
            raise OperationFailed(
                f"stable already runs {target.version} ({target.image}); nothing to undo",
                hint="`swiftdeploy history --event undo --event release_recorded` lists what ran when",
            )
        result.mode_from = result.mode_to = "stable"
        result.image, result.version = target.image, target.version
        fields = {
            "image": target.image,
            "version": target.version,
            "from_image": m.services.image,
            "from_version": m.services.version,
            "replaced_at": target.replaced_at,
        }
        op.event("undo_started", **fields)
        with failure_event(op, "undo_failed", **fields):
            stable = service_of(m, "stable")
            _require_healthy(op, stable, "the stable app", "run `swiftdeploy deploy` to restart it first")
            m_new = _switch(op, m, target, timeout)
            answer = _track_answer(m_new, "stable")
            if answer.get("version") not in (None, target.version):
                op.warn(f"stable answers version {answer.get('version')!r}, expected {target.version!r}")
        try:
            releases.write(path, recorded[:index])  # the restored one and every newer one are history now
        except Exception as exc:  # noqa: BLE001 - stable runs the restored version; only the record is stale
            op.warn(f"could not update {path}: {exc}; a next undo may offer {target.version} again")
        op.snapshot_services(m_new)
        result.details.append(f"replaced {m.services.version} ({m.services.image})")
        result.message = f"{m.services.name} {target.version} ({target.image}) is stable again (undo)"
        op.event("undo_succeeded", **fields)
        run_hooks(op, "post_rollback")
        return result


def _switch(op: Operation, m: Manifest, target: Release, timeout: float) -> Manifest:
    """The two phases of the module docstring; the manifest stable runs at the end."""
    runtime = op.runtime
    handover = FileTxn(m, _handover_values(m, target))
    m_handover = handover.m_new
    op.result.generated = [str(p) for p in handover.commit()]
    try:
        op.progress(f"starting {target.version} ({target.image}) as {m.canary_name}")
        runtime.start_track(m_handover, "canary", timeout=timeout, progress=op.progress)
        op.progress(f"handing all traffic to {target.version} while stable is replaced")
        runtime.reload_proxy(m_handover, all_to_canary=True)
        final = FileTxn(m_handover, _final_values(m_handover, target))
    except BaseException:
        handover.rollback()
        _converge(op, m, stop_canary=True)
        raise
    m_new = final.m_new
    op.result.generated = sorted({*op.result.generated, *(str(p) for p in final.commit())})
    try:
        command = f", command {' '.join(target.command)}" if target.command else ""
        op.progress(f"restarting stable on {target.image} (version {target.version}{command})")
        runtime.start_track(m_new, "stable", timeout=timeout, progress=op.progress)
    except BaseException:
        final.rollback()  # the files say the handover again: the runtime converges to it first (stable back on its
        _converge(op, m_handover, stop_canary=False, timeout=max(timeout, 60.0))  # version, the canary kept)
        handover.rollback()
        _converge(op, m, stop_canary=True)
        raise
    # Past this point stable runs the restored version: the edited manifest is the truth, keep it.
    op.progress("sending all traffic to the restored stable")
    runtime.reload_proxy(m_new)
    op.progress(f"removing {m.canary_name}")
    runtime.stop_track(m_new, "canary")
    return m_new


def _converge(op: Operation, m: Manifest, *, stop_canary: bool, timeout: float = 60.0) -> None:
    """Best effort after a failure: stable-only nginx then no canary (stop_canary), or the runtime converged to m
    (a stable recreated half-way comes back on m's version while the canary still answers everything)."""
    try:
        if stop_canary:
            op.runtime.reload_proxy(m)
            op.runtime.stop_track(m, "canary")
        else:
            op.runtime.up(m, timeout=timeout, progress=op.progress)
    except Exception as exc:  # noqa: BLE001 - the original error is what the person must see first
        op.warn(f"could not restore the runtime after the failure: {exc}; run `swiftdeploy deploy` to converge")
