"""`swiftdeploy rollout`: progressive delivery - the canary ramped up by `canary.steps`, judged at every step,
rolled back by itself when it is bad (docs/operations.md#progressive-delivery).

infrastructure gate -> the canary started at the first step's weight (`promote.start_canary`, as `promote canary`
starts it) -> at each step the sequential canary analysis (`judge.watch_canary`, as `promote stable` watches) for at
most `canary.analysis.max_step_seconds` -> on allow the next weight (a graceful nginx reload:
`Runtime.reload_proxy(weight=...)`) -> ... -> after the last step's allow, `promote.switch_over`, exactly what an
allowed `promote stable` does.

- deny: the canary rolled back (`rollback.remove_canary`: all traffic on stable, canary removed, mode stable),
  PolicyBlocked (exit 3) with every violation; `canary.analysis.rollback_on_failure: false` leaves it at that
  weight instead (the step recorded; `abort` ends it).
- inconclusive when the step's time is up: `on_inconclusive: pause` keeps the canary at that weight, records the
  step and raises RolloutPaused (exit 5); `rollout` again resumes at that step, `abort` ends it. `rollback`: as deny.
- `swiftdeploy abort` from another terminal (ops/abort.py): rolled back, exit 3.
- Ctrl-C: rolled back (or, with `pause_on_interrupt`, paused), `rollout_interrupted` recorded, exit 130.
- an error during a step: rolled back (unless rollback_on_failure is false), `rollout_failed`, exit 1.

The step reached is recorded in `<state folder>/rollout.json` (atomically, before each step), so a paused or
crashed rollout resumes where it was. A record is trusted only when it is well formed and describes this manifest's
project and canary, with the manifest still in canary mode (a `rollback` or `promote stable` since ends it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, OperationAborted, OperationFailed, PolicyBlocked, RolloutPaused
from ..hooks import run_hooks
from .abort import AbortWatch, no_sigint
from .base import Operation, OpResult, Progress, failure_event

RECORD_FILE = "rollout.json"
MAX_RECORD_BYTES = 16384
RECORD_FORMAT = 1
Update = Callable[[dict[str, Any]], None]


# --- the record of the step reached ------------------------------------------------------------------------------


@dataclass
class RolloutRecord:
    """Where a rollout is: `step` (0-based index into `steps`) at `weight`, `state` running | paused | held (a deny
    left at its weight: rollback_on_failure false), for which project and canary."""

    project: str
    image: str
    version: str
    steps: list[int]
    step: int
    weight: int
    state: str
    reason: str
    started: str
    updated: str
    pid: int
    format: int = RECORD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


STATES = ("running", "paused", "held")


def record_path(m: Any) -> Path:
    return m.state_dir / RECORD_FILE


def read_record(m: Any) -> RolloutRecord | None:
    """The recorded rollout of this manifest's state folder; None when there is none. OperationFailed (naming the
    file and the fix) when it is unreadable, malformed, too large, or of another project."""
    from ..fsutil import Refused, read_bounded

    path = record_path(m)
    try:  # a regular file only (a FIFO planted there never blocks), at most MAX_RECORD_BYTES
        raw = read_bounded(path, MAX_RECORD_BYTES, what="rollout record")
    except FileNotFoundError:
        return None
    except Refused as exc:
        raise _bad_record(path, f"is refused ({exc.problem})") from None
    except OSError as exc:
        raise _bad_record(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise _bad_record(path, "is not JSON (a torn or foreign file)") from None
    problem = _record_problem(data)
    if problem:
        raise _bad_record(path, problem)
    record = RolloutRecord(**data)
    if record.project != m.project_name:
        raise _bad_record(path, f"is of project {record.project!r}, not {m.project_name!r}")
    return record


def _record_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "is not a JSON object"
    fields = {
        "project": str, "image": str, "version": str, "steps": list, "step": int, "weight": int, "state": str,
        "reason": str, "started": str, "updated": str, "pid": int, "format": int,
    }  # fmt: skip
    if set(data) != set(fields):
        return f"has the fields {sorted(data)}, expected {sorted(fields)}"
    for name, kind in fields.items():
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is str and len(value) > 300):
            return f"field {name!r} is not a valid {kind.__name__}"
    if data["format"] != RECORD_FORMAT:
        return f"is format {data['format']}, this swiftdeploy writes format {RECORD_FORMAT}"
    steps = data["steps"]
    if not steps or len(steps) > 10 or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 99
                                           for s in steps):  # fmt: skip
        return "field 'steps' is not a list of 1 to 10 weights from 1 to 99"
    if not 0 <= data["step"] < len(steps) or steps[data["step"]] != data["weight"]:
        return "fields 'step' and 'weight' do not name one of its steps"
    if data["state"] not in STATES:
        return f"field 'state' is {data['state']!r}, not one of {', '.join(STATES)}"
    return None


def _bad_record(path: Path, problem: str) -> OperationFailed:
    return OperationFailed(
        f"the rollout record {path} {problem}: not trusted",
        hint="`swiftdeploy abort` ends the rollout it belonged to (rolls the canary back) and removes it",
    )


def write_record(m: Any, record: RolloutRecord) -> None:
    from ..fsutil import atomic_write

    m.state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(record_path(m), record.to_json(), mode=0o600)


def clear_record(m: Any) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(m).unlink()


# --- rollout -----------------------------------------------------------------------------------------------------


class _Run:
    """One rollout run: the operation, the steps, the record, and the events it records and streams."""

    def __init__(self, op: Operation, on_update: Update | None) -> None:
        self.op = op
        self.m = op.m
        self.steps = self.m.canary.rollout_steps
        self.analysis = self.m.canary.analysis
        self.on_update = on_update
        self.watch = AbortWatch(self.m.state_dir)
        self.m_canary: Any = None  # the manifest in canary mode once the canary runs (None before)
        self.step = 0
        self.started = ""
        self.promoting = False  # past the last gate: the switch-over undoes its own failures, nothing else does

    @property
    def weight(self) -> int:
        return self.steps[self.step]

    def position(self) -> dict[str, Any]:
        return {"step": self.step + 1, "steps": len(self.steps), "weight": self.weight}

    def event(self, name: str, **fields: Any) -> None:
        record = self.op.event(name, **fields)
        if self.on_update is not None:
            self.on_update(record)

    def stream(self, name: str, **fields: Any) -> None:
        """Only on the stream: the record the gate wrote itself (`rollout_verdict` of a step that did not allow)."""
        from ..history import now_ts

        if self.on_update is not None:
            self.on_update({"ts": now_ts(), "event": name, **fields, "runtime": self.m.runtime})

    def save(self, state: str, reason: str = "") -> None:
        from ..history import now_ts

        write_record(
            self.m,
            RolloutRecord(
                project=self.m.project_name,
                image=self.m.canary_image,
                version=self.m.canary_version,
                steps=self.steps,
                step=self.step,
                weight=self.weight,
                state=state,
                reason=reason,
                started=self.started or now_ts(),
                updated=now_ts(),
                pid=os.getpid(),
            ),
        )

    def roll_back(self, reason: str, *, hooks: bool = True) -> None:
        """The automatic rollback (Ctrl-C waits for it): all traffic on stable, the canary removed, mode stable;
        then the post_rollback hooks (`hooks=False`: the caller runs them, after answering an abort request)."""
        from .rollback import remove_canary

        with no_sigint():
            self.op.progress(f"rolling the canary back ({reason}) at step {self.step + 1} ({self.weight}%)")
            remove_canary(self.op, self.m_canary)
            clear_record(self.m)
            self.m_canary = None
            self.event(
                "rollout_rolled_back",
                reason=reason,
                **self.position(),
                mode_from="canary",
                mode_to="stable",
                image=self.m.services.image,
                version=self.m.services.version,
            )
        if hooks:
            run_hooks(self.op, "post_rollback", verdict=reason)


def rollout(
    manifest_path: Path | str,
    progress: Progress | None = None,
    *,
    on_update: Update | None = None,
    pause_on_interrupt: bool = False,
    timeout: float = 60.0,
) -> OpResult:
    """Ramp the canary up by canary.steps, judging every step; promote it after the last (module docstring).

    `on_update(record)` receives every history record the rollout writes (step changes, verdicts, pause, abort,
    rollback; what `--json` streams), `progress` the steps and the watch's ticker (judge.WatchProgress, whose
    `look` holds the look's facts and decision). Raises PolicyBlocked (exit 3: denied, or inconclusive with
    on_inconclusive rollback), RolloutPaused (exit 5), OperationAborted (exit 3), OperationInterrupted (130)."""
    from ..policy.facts import host_facts
    from ..runtime import service_of
    from .promote import _require_healthy

    with Operation(manifest_path, "rollout", progress) as op:
        run = _Run(op, on_update)
        m, result = op.m, op.result
        if not all(1 <= weight <= 99 for weight in run.steps):
            raise InvalidInput(
                f"canary.weight {m.canary.weight} cannot be a rollout step (a step is a weight from 1 to 99)",
                hint="set canary.steps, e.g. [10, 25, 50], or a canary.weight from 1 to 99",
            )
        record = _resumable(op, run)
        resumed = record is not None
        run.step = record.step if record is not None else 0
        run.started = record.started if record is not None else ""
        result.image, result.version = m.canary_image, m.canary_version
        result.mode_from, result.mode_to = m.services.mode, "stable"
        fields = {"image": m.canary_image, "version": m.canary_version}
        run.event(
            "rollout_started",
            steps=run.steps,
            max_step_seconds=run.analysis.max_step_seconds,
            resumed=resumed,
            from_step=run.step + 1,
            **fields,
        )
        with failure_event(op, "rollout_failed", **fields):
            _require_healthy(op, service_of(m, "stable"), "the stable app", "run `swiftdeploy deploy` first")
            op.progress("checking the host against the infrastructure policy")
            facts = host_facts(m.base_dir)
            op.gate("infrastructure", facts, gate="rollout", blocked_event="rollout_blocked", **fields)
        try:
            run_hooks(op, "pre_promote", verdict="allow", weight=run.weight)  # before the canary takes traffic
            _begin(run, resumed, timeout)
            while True:
                decision = _judge_step(run)
                if decision is None:
                    break  # the last step allowed
            run.watch.check()
            run.promoting = True
            op.progress(f"all {len(run.steps)} steps allowed: promoting {m.canary_name} to stable")
            run_hooks(op, "pre_promote", verdict="allow", weight=100)  # before it becomes the new stable
            m_new = _promote(run, timeout)
        except OperationAborted as exc:
            _aborted(run, exc, fields)
            raise
        except PolicyBlocked:
            raise  # handled where the step's verdict was given
        except KeyboardInterrupt:
            _interrupted(run, pause_on_interrupt)
            raise  # Operation records rollout_interrupted and says what is left (exit 130)
        except Exception as exc:
            _failed(run, exc, fields)
            raise
        op.snapshot_services(m_new)
        result.message = (
            f"rolled out {m.services.name} {m.canary_version} ({m.canary_image}) in {len(run.steps)} step"
            f"{'s' if len(run.steps) != 1 else ''} ({', '.join(f'{w}%' for w in run.steps)}): it is the new stable"
        )
        run.event("rollout_succeeded", steps=run.steps, mode_from="canary", mode_to="stable", **fields)
        run_hooks(op, "post_promote")
        return result


def _resumable(op: Operation, run: _Run) -> RolloutRecord | None:
    """The recorded rollout this run continues, or None (a fresh one). A record left by a rollout that a
    `rollback`/`promote stable`/`teardown` ended since (mode stable now) is dropped with a warning."""
    m = op.m
    record = read_record(m)
    if record is None:
        return None
    if m.services.mode != "canary":
        op.warn(
            f"dropped the record of a rollout {record.state} at step {record.step + 1} ({record.weight}%): the "
            "manifest is in stable mode now (a rollback or promotion ended it); starting a new rollout"
        )
        clear_record(m)
        return None
    if (record.image, record.version) != (m.canary_image, m.canary_version) or record.steps != run.steps:
        raise OperationFailed(
            f"the {record.state} rollout of {record.image} {record.version} (steps {record.steps}) does not match the "
            f"manifest's canary {m.canary_image} {m.canary_version} (steps {run.steps}): not resumed",
            hint="`swiftdeploy abort` ends it (the canary rolled back), then `swiftdeploy rollout` starts this one",
        )
    op.progress(f"resuming the rollout {record.state} at step {record.step + 1} of {len(record.steps)}")
    return record


def _begin(run: _Run, resumed: bool, timeout: float) -> None:
    """The canary at the current step's weight: started (as `promote canary` starts it), or - one already running
    (a resumed rollout, or one `promote canary` started) - its weight set."""
    from .promote import start_canary

    op, m = run.op, run.m
    state = op.runtime.health(m).get(m.canary_name)
    if m.services.mode == "canary" and state is not None and state.healthy:
        run.m_canary = m
        op.progress(f"{m.canary_name} runs: {run.weight}% of public traffic to it")
        op.runtime.reload_proxy(m, weight=run.weight)
    else:
        if resumed:
            op.progress(f"{m.canary_name} is not running: starting it again")
        run.m_canary = start_canary(op, m, weight=run.weight, timeout=timeout)


def _judge_step(run: _Run) -> Any:
    """Watch the canary at the current step; move on (reload to the next weight) on allow. Returns None after the
    last step's allow, else the decision of the step that was allowed."""
    from ..judge import Look, progress_line, watch_canary

    op, m = run.op, run.m_canary
    seconds = run.analysis.max_step_seconds
    run.save("running")
    run.event("rollout_step", **run.position())
    run.watch.check()
    op.progress(
        f"step {run.step + 1} of {len(run.steps)}: {run.weight}% to the canary, watching it for up to {seconds:g}s"
    )
    facts = watch_canary(m, seconds, progress=op.progress, sleep=run.watch.sleep)
    run.watch.check()
    where = run.position()
    try:
        decision = op.gate("canary", facts, gate="rollout", blocked_event="rollout_verdict", **where)
    except PolicyBlocked as exc:
        decision = exc.decision
        violations = [v.to_dict() for v in decision.violations]
        run.stream("rollout_verdict", verdict=decision.verdict, violations=violations, **where)
        _not_allowed(run, exc)
        raise
    summary = progress_line(Look(elapsed=float(facts.get("window_seconds") or 0), facts=facts, decision=decision),
                            seconds)  # fmt: skip
    run.event(
        "rollout_verdict",
        verdict=decision.verdict,
        violations=[],
        basis=[b.to_dict() for b in decision.basis],
        summary=summary,
        **where,
    )
    op.result.details += [f"step {run.step + 1} ({run.weight}%) allowed: {b.message}" for b in decision.basis]
    if run.step + 1 == len(run.steps):
        return None
    run.step += 1
    op.progress(f"moving to {run.weight}% of public traffic on the canary (graceful nginx reload)")
    op.runtime.reload_proxy(m, weight=run.weight)
    return decision


def _not_allowed(run: _Run, exc: PolicyBlocked) -> None:
    """A step that did not allow: roll back, pause or hold, as the manifest says; `exc` (or the RolloutPaused raised
    here) is what the caller raises."""
    decision = exc.decision
    analysis = run.analysis
    violations = [v.to_dict() for v in decision.violations]
    where = run.position()
    if decision.verdict == "inconclusive" and analysis.on_inconclusive == "pause":
        run.save("paused", "inconclusive")
        evidence = decision.evidence or {}
        run.event(
            "rollout_paused",
            reason="inconclusive",
            requests_needed=evidence.get("requests_needed"),
            violations=violations,
            **where,
        )
        raise RolloutPaused(
            f"rollout paused at step {run.step + 1} of {len(run.steps)} ({run.weight}% to the canary): the canary "
            f"analysis was still inconclusive after {analysis.max_step_seconds:g}s",
            decision=decision,
            hint="`swiftdeploy rollout` resumes at this step (send more traffic), `swiftdeploy abort` rolls it back",
        ) from None
    if decision.verdict == "deny" and not analysis.rollback_on_failure:
        run.save("held", "deny")
        run.event("rollout_blocked", verdict=decision.verdict, violations=violations, rolled_back=False, **where)
        exc.hint = (
            f"canary.analysis.rollback_on_failure is false: the canary keeps {run.weight}% of public traffic; "
            "`swiftdeploy abort` rolls it back"
        )
        return
    run.roll_back(decision.verdict)
    run.event("rollout_blocked", verdict=decision.verdict, violations=violations, rolled_back=True, **where)
    exc.hint = f"rolled back at step {run.step + 1} of {len(run.steps)} ({run.weight}%): all traffic on stable"


def _promote(run: _Run, timeout: float) -> Any:
    from .promote import switch_over

    m_new = switch_over(run.op, run.m_canary, timeout=timeout)
    clear_record(run.m)
    run.watch.answer_late("too late: every step had passed and the canary was being promoted; it is the new stable")
    return m_new


def _failed(run: _Run, exc: Exception, fields: dict[str, Any]) -> None:
    """An error during a step (not a verdict): roll back unless rollback_on_failure is false; rollout_failed."""
    from ..errors import SwiftDeployError

    error = str(exc) if isinstance(exc, SwiftDeployError) else f"{type(exc).__name__}: {exc}"
    rolled_back = False
    if run.m_canary is not None and not run.promoting and run.analysis.rollback_on_failure:
        try:
            run.roll_back("failed")
            rolled_back = True
        except Exception as undo:  # noqa: BLE001 - the original error is what the person must see first
            run.op.warn(f"could not roll the canary back: {undo}; run `swiftdeploy rollback`")
    elif run.m_canary is not None and not run.promoting:
        with contextlib.suppress(Exception):
            run.save("held", "failed")
    run.event("rollout_failed", error=error, rolled_back=rolled_back, **run.position(), **fields)


def _aborted(run: _Run, exc: OperationAborted, fields: dict[str, Any]) -> None:
    """`swiftdeploy abort` asked: the canary rolled back (Ctrl-C waits for it), rollout_aborted recorded with who
    asked and when, the request answered; `exc` says what was done."""
    req = exc.request
    where = run.position()
    rolled_back = run.m_canary is not None
    if rolled_back:
        run.roll_back("aborted", hooks=False)
        done = f"{run.m.canary_name} removed at step {where['step']} ({where['weight']}%), all traffic on stable"
    else:
        done = f"stopped before {run.m.canary_name} took traffic; nothing to roll back"
    run.event("rollout_aborted", by=req.by, requested_at=req.at, **where, **fields)
    run.watch.answer(req, done)  # before the hooks: `abort` waits for this answer
    exc.message = f"rollout {req.describe()}: {done} ({run.m.services.version})"
    if rolled_back:
        run_hooks(run.op, "post_rollback", verdict="aborted")


def _interrupted(run: _Run, pause: bool) -> None:
    """Ctrl-C during the steps: roll back (Ctrl-C again waits for it), or with `pause` keep the canary at this
    step's weight and record the pause; Operation then records rollout_interrupted and raises (exit 130)."""
    if run.m_canary is None or run.promoting:
        return
    if pause:
        run.save("paused", "interrupted")
        run.event("rollout_paused", reason="interrupted", **run.position())
        return
    try:
        run.roll_back("interrupted")
    except Exception as undo:  # noqa: BLE001 - still an interruption; say what is left
        run.op.warn(f"could not roll the canary back after Ctrl-C: {undo}; run `swiftdeploy rollback`")


# --- abort of a paused rollout (no operation running) -------------------------------------------------------------


def abort_paused(manifest_path: Path | str, progress: Progress | None = None) -> OpResult:
    """`swiftdeploy abort` with nothing running: roll back the recorded (paused, held or crashed) rollout under the
    lock. OperationFailed (exit 1) when there is nothing to abort."""
    from .abort import who
    from .rollback import remove_canary

    with Operation(manifest_path, "abort", progress) as op:
        m, result = op.m, op.result
        try:
            record = read_record(m)
        except OperationFailed as exc:  # a record not to be trusted: still ended, the canary rolled back
            op.warn(exc.message)
            record = None
            bad = True
        else:
            bad = False
        if record is None and not bad:
            raise OperationFailed(
                "nothing to abort: no rollout or promote stable runs, and no rollout is paused",
                hint="`swiftdeploy rollback` removes a canary `promote canary` started",
            )
        from ..history import now_ts

        by, at = who(), now_ts()
        where = {"step": record.step + 1, "steps": len(record.steps), "weight": record.weight} if record else {}
        result.mode_from, result.mode_to = m.services.mode, "stable"
        result.image, result.version = m.services.image, m.services.version
        states = op.runtime.health(m)
        if m.services.mode == "canary" or m.canary_name in states:
            with no_sigint():
                remove_canary(op, m, states)
            done = f"{m.canary_name} removed, all traffic on stable ({m.services.version})"
        else:
            done = "no canary was running any more"
        clear_record(m)
        op.event("rollout_aborted", by=by, requested_at=at, state=record.state if record else "untrusted", **where)
        if m.services.mode == "canary" or m.canary_name in states:
            op.event("rollout_rolled_back", reason="aborted", mode_from="canary", mode_to="stable",
                     image=m.services.image, version=m.services.version, **where)  # fmt: skip
            run_hooks(op, "post_rollback", verdict="aborted")
        what = f"the rollout {record.state} at step {record.step + 1} ({record.weight}%)" if record else "the rollout"
        result.message = f"aborted {what}: {done}"
        op.snapshot_services()
        return result
