"""promote canary / promote stable (docs/contracts.md#cli, docs/operations.md).

Both gate first and change nothing until the policy allows. After the gate, the manifest edit and the generated
files are written together (FileTxn) and restored exactly when a later runtime step fails, so a failed promotion
leaves the manifest as it was. Runtime steps that already ran are undone best-effort (the canary stopped, nginx
pointed back, the stable app brought back to the restored manifest).

The order of the runtime steps is what keeps promotions from dropping requests, on every runtime: nginx only ever
routes to apps that are healthy, and an app stops only after a graceful reload took every route away from it
(`reload_proxy` returns once the old nginx workers finished their requests). See docs/operations.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInput, OperationAborted, OperationFailed
from ..hooks import run_hooks
from .abort import AbortWatch, roll_back_aborted
from .base import FileTxn, Operation, OpResult, Progress, failure_event, http_json, run_all
from .undo import record_release


def _require_healthy(op: Operation, service: str, what: str, fix: str) -> None:
    state = op.runtime.health(op.m).get(service)
    if state is None or not state.healthy:
        detail = state.detail if state else "not running (nothing recorded for it)"
        raise OperationFailed(f"{what} {service} is not healthy: {detail}", hint=fix)


def _track_answer(m: Any, track: str) -> dict[str, Any]:
    from ..metrics import admin_url

    status, body = http_json(admin_url(m, track, "healthz"), timeout=5.0)
    if status != 200 or not isinstance(body, dict):
        raise OperationFailed(f"{admin_url(m, track, 'healthz')} answered HTTP {status}: {str(body)[:200]}")
    return body


def promoted_values(m: Any) -> dict[tuple[str, ...], Any]:
    """The manifest edit of an allowed `promote stable`: the canary's image, version and (when it has its own)
    command become stable's, and the mode goes back to stable."""
    values: dict[tuple[str, ...], Any] = {
        ("services", "image"): m.canary_image,
        ("services", "version"): m.canary_version,
        ("services", "mode"): "stable",
    }
    if m.canary.command:
        values[("services", "command")] = list(m.canary.command)
    return values


def _undo(op: Operation, txn: FileTxn, *, stop_canary: bool, timeout: float = 60.0) -> None:
    """Best effort after a failed promotion: restore files, then make the runtime match them again. Every step
    runs even when an earlier one fails (a nginx that cannot reload still gets its canary stopped); each failure is
    one warning.

    stop_canary (promote canary): stable-only config, then the canary goes. Otherwise (promote stable) the runtime
    converges to the restored manifest: a stable app that was already replaced (docker recreates in place) comes
    back on the old version while nginx still hands every request to the canary; an untouched one keeps running
    (local: blue/green never stopped it). Then nginx splits again."""
    steps: list[tuple[str, Any]] = [("restoring the manifest and the generated files", txn.rollback)]
    if stop_canary:
        steps += [
            ("pointing nginx back at stable", lambda: op.runtime.reload_proxy(txn.m_old)),  # the old manifest
            (f"stopping {txn.m_old.canary_name}", lambda: op.runtime.stop_track(txn.m_old, "canary")),
        ]
    else:
        converge = lambda: op.runtime.up(txn.m_old, timeout=timeout, progress=op.progress)  # noqa: E731
        steps.append(("converging to the restored manifest", converge))
    for problem in run_all(op, steps):
        # the original error is what the person must see first: these are warnings
        op.warn(f"could not undo every step after the failure: {problem}; run `swiftdeploy deploy` to converge")


def _routes_to_canary(op: Operation) -> bool:
    """Does the running nginx route to the canary? Its admin listener's /canary/healthz reaches the canary app
    (mode canary) only with the canary-mode config loaded; the stable-mode config answers 503 there."""
    try:
        return _track_answer(op.m, "canary").get("mode") == "canary"
    except OperationFailed:
        return False


def start_canary(op: Operation, m: Any, *, weight: int | None = None, timeout: float = 60.0) -> Any:
    """After the gate of `promote canary` (and of `rollout`): mode canary in the manifest and its generated files,
    the canary started, public traffic split by `weight` (a rollout step) or canary.weight. Any failure undoes it
    all (files restored, canary stopped). Returns the edited manifest."""
    txn = FileTxn(m, {("services", "mode"): "canary"})
    m_new = txn.m_new
    op.result.generated = [str(p) for p in txn.commit()]
    try:
        op.progress(f"starting {m.canary_name} ({m.canary_image}, version {m.canary_version})")
        op.runtime.start_track(m_new, "canary", timeout=timeout, progress=op.progress)
        op.progress(f"splitting public traffic: {weight if weight is not None else m.canary.weight}% to the canary")
        op.runtime.reload_proxy(m_new, weight=weight)
        answer = _track_answer(m_new, "canary")
        if answer.get("mode") != "canary":
            raise OperationFailed(
                f"the admin listener's /canary/healthz answered mode {answer.get('mode')!r}, not 'canary'",
                hint="the canary app must report MODE=canary on /healthz",
            )
    except BaseException:
        _undo(op, txn, stop_canary=True)
        raise
    return m_new


def switch_over(op: Operation, m: Any, *, timeout: float = 60.0) -> Any:
    """After an allowed canary gate (`promote stable`, the last step of `rollout`): the canary becomes the new
    stable, the canary goes. `m` is the manifest in canary mode. Returns the edited manifest (mode stable).

    Until the new stable runs, a failure restores the files and the runtime (the old stable back); past that
    point the edited manifest is the truth and is kept."""
    txn = FileTxn(m, promoted_values(m))
    m_new = txn.m_new
    op.result.generated = [str(p) for p in txn.commit()]
    try:
        # 1. every route to the canary (graceful): from here the stable app gets no request at all
        op.progress(f"handing all traffic to {m.canary_name} while stable is replaced")
        op.runtime.reload_proxy(m, all_to_canary=True)
        # 2. stable on the canary's image and version, healthy before nginx routes to it again
        command = f", command {' '.join(m.canary.command)}" if m.canary.command else ""
        op.progress(f"restarting stable on {m.canary_image} (version {m.canary_version}{command})")
        op.runtime.start_track(m_new, "stable", timeout=timeout, progress=op.progress)
    except BaseException:
        # The old version is known to start: give it at least a minute even after a short --timeout.
        _undo(op, txn, stop_canary=False, timeout=max(timeout, 60.0))
        raise
    # Past this point stable runs the new version: the edited manifest is the truth, keep it.
    # 3. the final config (stable only; nginx resolves the new stable's address), 4. the canary goes.
    op.progress("sending all traffic to the new stable")
    op.runtime.reload_proxy(m_new)
    op.progress(f"removing {m.canary_name}")
    op.runtime.stop_track(m_new, "canary")
    answer = _track_answer(m_new, "stable")
    if answer.get("version") not in (None, m.canary_version):
        op.warn(f"stable answers version {answer.get('version')!r}, expected {m.canary_version!r}")
    record_release(op, m)  # what stable ran before, for `swiftdeploy undo`
    return m_new


def promote_canary(manifest_path: Path | str, progress: Progress | None = None, timeout: float = 60.0) -> OpResult:
    """Start the canary track beside stable and split public traffic by canary.weight."""
    from ..policy.facts import host_facts
    from ..runtime import service_of

    with Operation(manifest_path, "promote_canary", progress) as op:
        m, result = op.m, op.result
        result.image, result.version = m.canary_image, m.canary_version
        result.mode_from, result.mode_to = m.services.mode, "canary"
        canary_running = op.runtime.health(m).get(m.canary_name)
        if m.services.mode == "canary" and canary_running is not None and canary_running.healthy:
            if _routes_to_canary(op):
                result.message = f"{m.canary_name} already runs ({m.canary_image}, {m.canary_version}); nothing to do"
                op.snapshot_services()
                return result
            # A run killed between "canary healthy" and "nginx reloaded": the canary runs, nginx does not send it
            # anything. Reload, and check again.
            op.warn(f"{m.canary_name} runs but nginx does not route to it (an interrupted promote canary): reloading")
            op.progress(f"splitting public traffic: {m.canary.weight}% to the canary")
            op.runtime.reload_proxy(m)
            if not _routes_to_canary(op):
                raise OperationFailed(
                    f"nginx does not route to {m.canary_name} even after a reload",
                    hint="see `swiftdeploy ps` and the nginx error log; `swiftdeploy rollback` gives up on the canary",
                )
            result.message = (
                f"{m.canary_name} ({m.canary_image}, {m.canary_version}) already ran; nginx now "
                f"sends it {m.canary.weight}% of public traffic"
            )
            op.snapshot_services()
            return result
        fields = {"target": "canary", "image": m.canary_image, "version": m.canary_version}
        op.event("promote_started", **fields)
        with failure_event(op, "promote_failed", **fields):
            _require_healthy(op, service_of(m, "stable"), "the stable app", "run `swiftdeploy deploy` first")
            op.progress("checking the host against the infrastructure policy")
            facts = host_facts(m.base_dir)
            op.gate("infrastructure", facts, gate="promote_canary", blocked_event="promote_blocked", **fields)
            run_hooks(op, "pre_promote", verdict="allow", weight=m.canary.weight)
            m_new = start_canary(op, m, timeout=timeout)
        op.snapshot_services(m_new)
        result.message = (
            f"canary {m.canary_name} ({m.canary_image}, {m.canary_version}) takes {m.canary.weight}% of public traffic"
        )
        op.event("promote_succeeded", mode_from=m.services.mode, mode_to="canary", weight=m.canary.weight, **fields)
        run_hooks(op, "post_promote")
        return result


def promote_stable(
    manifest_path: Path | str,
    window: float | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> OpResult:
    """Gate the canary on its metrics, watched for at most `window` seconds (swiftdeploy.judge.watch_canary: it stops
    at the first clear verdict); on allow make it the new stable.

    Deny or inconclusive: PolicyBlocked (exit 3) and nothing changes (manifest, generated files, processes).
    `swiftdeploy abort` while it watches (ops/abort.py): the canary is rolled back, `promote_aborted`,
    OperationAborted (exit 3).
    """
    from ..judge import watch_canary
    from ..runtime import service_of

    with Operation(manifest_path, "promote_stable", progress) as op:
        m, result = op.m, op.result
        if m.services.mode != "canary":
            raise OperationFailed(
                "there is no canary to promote: the manifest's services.mode is stable",
                hint="start one with `swiftdeploy promote canary`",
            )
        if window is not None and not 0 < window <= 3600:
            raise InvalidInput(f"--window must be between 0 and 3600 seconds, got {window:g}")
        seconds = float(window if window is not None else m.policy.window_seconds)
        result.image, result.version = m.canary_image, m.canary_version
        result.mode_from, result.mode_to = "canary", "stable"
        fields = {"target": "stable", "image": m.canary_image, "version": m.canary_version}
        op.event("promote_started", window_seconds=seconds, **fields)
        with failure_event(op, "promote_failed", **fields):
            _require_healthy(
                op, m.canary_name, "the canary", "run `swiftdeploy promote canary` again or `swiftdeploy rollback`"
            )
            _require_healthy(op, service_of(m, "stable"), "the stable app", "run `swiftdeploy deploy` to restart it")
            op.progress(f"watching the canary for up to {seconds:g}s (send traffic meanwhile: `swiftdeploy traffic`)")
            abort = AbortWatch(m.state_dir)  # `swiftdeploy abort` from another terminal: canary rolled back, exit 3
            try:
                facts = watch_canary(m, seconds, progress=op.progress, sleep=abort.sleep)
                abort.check()
            except OperationAborted as exc:
                roll_back_aborted(op, m, exc, abort, "promote_aborted", **fields)
                raise
            decision = op.gate("canary", facts, gate="promote_stable", blocked_event="promote_blocked", **fields)
            result.details += [f"allowed: {basis.message}" for basis in decision.basis]  # what the allow rests on
            run_hooks(op, "pre_promote", verdict=decision.verdict)
            m_new = switch_over(op, m, timeout=timeout)
            abort.answer_late("too late: the canary had passed its gate and was being promoted; it is the new stable")
        op.snapshot_services(m_new)
        result.message = f"{m.services.name} {m.canary_version} ({m.canary_image}) is the new stable; canary removed"
        op.event("promote_succeeded", mode_from="canary", mode_to="stable", **fields)
        run_hooks(op, "post_promote")
        return result
