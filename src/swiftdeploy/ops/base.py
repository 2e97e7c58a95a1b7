"""What every operation shares: the result object, the locked operation context, and a file transaction that
puts the manifest and the generated files back when a later step fails.

Ctrl-C: `Operation` turns a KeyboardInterrupt into `OperationInterrupted` (exit 130) whose one line says which step
was stopped and what was left (the manifest as it was or changed, what runs now), and closes the operation's
`<operation>_started` history record with `<operation>_interrupted`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OperationAborted, OperationFailed, OperationInterrupted, PolicyBlocked, SwiftDeployError
from ..hooks import run_hooks

if TYPE_CHECKING:
    from ..generate import Change
    from ..manifest import Manifest
    from ..policy import Decision
    from ..runtime import Runtime

Progress = Callable[[str], None]


@dataclass
class OpResult:
    """What an operation did, for the CLI to render (or print as JSON)."""

    operation: str
    ok: bool = True
    message: str = ""
    runtime: str = ""
    mode_from: str | None = None
    mode_to: str | None = None
    image: str | None = None
    version: str | None = None
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "ok": self.ok,
            "message": self.message,
            "runtime": self.runtime,
            "mode_from": self.mode_from,
            "mode_to": self.mode_to,
            "image": self.image,
            "version": self.version,
            "services": self.services,
            "decisions": self.decisions,
            "generated": self.generated,
            "details": self.details,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


class Operation:
    """One locked operation on one manifest: `with Operation(path, "deploy", progress) as op: op.m, op.runtime`."""

    def __init__(self, manifest_path: Path | str, name: str, progress: Progress | None = None) -> None:
        self.path = Path(manifest_path)
        self.name = name
        self._progress = progress
        self.result = OpResult(operation=name)
        self._started = time.monotonic()
        self._lock: Any = None
        self.m: Manifest
        self.runtime: Runtime
        self._step = "starting"  # the last progress message: the step an interruption stops
        self._step_at_sigint: str | None = None
        self._start_event: tuple[str, dict[str, Any]] | None = None  # ("deploy", fields of deploy_started)
        self._sigint_watched = False
        self.last_record: dict[str, Any] | None = None  # the last history record this operation wrote

    def __enter__(self) -> Operation:
        from ..lock import DeployLock
        from ..manifest import load_manifest
        from ..runtime import get_runtime

        # The lock lives next to the manifest (same place as m.state_dir), so it is taken before loading:
        # what we load is what nobody else is changing.
        state_dir = self.path.resolve().parent / ".swiftdeploy"
        if not self.path.is_file():
            load_manifest(self.path)  # raises the usual "manifest not found" error (exit 2)
        self._lock = DeployLock(state_dir, self.name).acquire()
        try:
            if self._lock.warning:
                self.warn(self._lock.warning)
            self.m = load_manifest(self.path)
            self.runtime = get_runtime(self.m)
            self.result.runtime = self.runtime.name
        except BaseException:
            self._lock.release()
            raise
        self._watch_sigint()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.result.seconds = time.monotonic() - self._started
        self._unwatch_sigint()
        self._runtime_warnings()
        interrupted = None
        try:
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, OperationInterrupted):
                interrupted = self._interrupted()
        finally:
            remove = self._lock.remove_on_release
            self._lock.release()
            if remove:  # teardown --clean: the state folder goes too once it is empty
                with contextlib.suppress(OSError):
                    self._lock.path.parent.rmdir()
        if interrupted is not None:
            raise interrupted from None
        if isinstance(exc, SwiftDeployError | OperationInterrupted) and exc.result is None:
            exc.result = self.result  # what a --json answer on failure reports as done so far

    # --- Ctrl-C --------------------------------------------------------------------------------------------------

    def _watch_sigint(self) -> None:
        """Remember which step Ctrl-C arrived in (an undo after it prints progress of its own). Only in the main
        thread and only over Python's default handler: a program with its own SIGINT handler keeps it."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._step_at_sigint is None:
                self._step_at_sigint = self._step
            signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        self._sigint_watched = True

    def _unwatch_sigint(self) -> None:
        if self._sigint_watched:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._sigint_watched = False

    def _interrupted(self) -> OperationInterrupted:
        """Say what Ctrl-C stopped and what it left, and record `<operation>_interrupted` (when a start was
        recorded). Runs after whatever undo the operation did on its way out."""
        step = re.sub(r" \([^()]*`[^()]*\)$", "", self._step_at_sigint or self._step)  # not its "(run `x`)" advice
        changed, manifest = self._manifest_now()
        running, where = self._running_now()
        name = self.name.replace("_", " ")
        message = f"{name} stopped by Ctrl-C while {step}; {manifest}; {where}"
        if self._start_event is not None:
            family, fields = self._start_event
            with contextlib.suppress(Exception):  # the line matters more than the record
                self.event(
                    f"{family}_interrupted",
                    **fields,
                    step=step,
                    manifest_changed=changed,
                    running=running,
                )
        interrupted = OperationInterrupted(
            message + " (see `swiftdeploy ps`; `swiftdeploy deploy` converges to the manifest)"
        )
        interrupted.result = self.result
        return interrupted

    def _manifest_now(self) -> tuple[bool | None, str]:
        """(whether the manifest changed since the operation loaded it, None when it cannot be read; the words for
        the line: how it changed, and whether the generated files still match it)."""
        from .. import generate
        from ..manifest import load_manifest

        try:
            current = load_manifest(self.path)
        except Exception as exc:  # noqa: BLE001 - reported in the line
            return None, f"the manifest cannot be read now ({exc})"
        changed = current.sha256 != self.m.sha256
        if not changed:
            text = "the manifest is as it was"
        else:
            was, now = self.m.services, current.services
            changes = [f"{key} {getattr(was, key)} -> {getattr(now, key)}" for key in ("mode", "image", "version")
                       if getattr(was, key) != getattr(now, key)]  # fmt: skip
            text = "the manifest was changed" + (f" ({', '.join(changes)})" if changes else "")
        with contextlib.suppress(Exception):
            if any(change.changed for change in generate.plan(current)):
                text += ", the generated files differ from it (`swiftdeploy init` rewrites them)"
        return changed, text

    def _running_now(self) -> tuple[list[str], str]:
        try:
            states = self.runtime.health(self.m)
        except Exception as exc:  # noqa: BLE001 - reported in the line
            return [], f"what runs now is unknown ({exc})"
        up = [state for state in states.values() if state.running]
        if not up:
            return [], "nothing of the stack runs"
        shown = ", ".join(
            f"{s.service} ({'pid ' + str(s.pid) + ', ' if s.pid else ''}{'healthy' if s.healthy else 'unhealthy'})"
            for s in up
        )
        return [s.service for s in up], f"running: {shown}"

    @property
    def lock(self) -> Any:
        return self._lock

    def _runtime_warnings(self) -> None:
        """Say what the runtime refused or recovered (a forged pid file, an orphan it stopped: runtime/procs.py)."""
        from ..runtime import procs

        for message in procs.take_warnings():
            self.warn(message)

    def progress(self, message: str) -> None:
        self._runtime_warnings()
        if not getattr(message, "transient", False):  # a ticker line (the canary watch) is not a step
            self._step = message
        if self._progress is not None:
            self._progress(message)

    def warn(self, message: str) -> None:
        self.result.warnings.append(message)
        if self._progress is not None:
            self._progress(f"warning: {message}")

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one history record (with `runtime`) and return it."""
        from ..history import append

        record = append(self.m.history_path, event, rotation=self.m.history.rotation, runtime=self.m.runtime, **fields)
        self.last_record = record  # what a hook run next sees as SWIFTDEPLOY_RECORD (swiftdeploy.hooks)
        if event.endswith("_started"):  # closed by `_succeeded`/`_failed`/`_blocked`, or `_interrupted` here
            self._start_event = (event.removesuffix("_started"), fields)
        return record

    def gate(self, domain: str, facts: dict[str, Any], *, gate: str, blocked_event: str, **fields: Any) -> Decision:
        """The policy gate: evaluate `domain` on `facts`, record the decision (history `policy_decision` with
        `gate`, and the result), and return it when it allows. Otherwise record `blocked_event` with the verdict,
        the violations and `fields`, and raise PolicyBlocked (exit 3). Call it before changing anything."""
        from ..history import record_decision
        from ..policy import evaluate, require_allow

        decision = evaluate(self.m, domain, facts)
        record_decision(self.m.history_path, decision, rotation=self.m.history.rotation, gate=gate)
        self.result.decisions.append(decision.to_dict())
        try:
            return require_allow(decision)
        except PolicyBlocked:
            violations = [v.to_dict() for v in decision.violations]
            self.event(blocked_event, verdict=decision.verdict, violations=violations, **fields)
            run_hooks(self, "on_blocked", verdict=decision.verdict)
            raise

    def snapshot_services(self, m: Manifest | None = None) -> None:
        try:
            states = self.runtime.health(m or self.m)
        except Exception as exc:  # noqa: BLE001 - a result detail only; the operation already succeeded
            self.warn(f"could not read service states: {exc}")
            return
        self.result.services = {name: state.to_dict() for name, state in states.items()}


def edited_manifest(m: Manifest, values: Mapping[tuple[str, ...], Any]) -> tuple[str, str, Manifest]:
    """(old text, new text, model of the new text) for an edit of m's file; nothing is written yet."""
    from ..manifest import parse_manifest
    from ..manifest.edit import edit_text

    assert m.source_path is not None
    old = m.source_path.read_text(encoding="utf-8")
    new = edit_text(old, values, source=str(m.source_path))
    m_new = parse_manifest(new, source=str(m.source_path))
    return old, new, m_new.with_source(m.source_path, hashlib.sha256(new.encode("utf-8")).hexdigest())


class FileTxn:
    """Writes the edited manifest and its generated files; `rollback()` restores both exactly as they were.

    `commit` checks first that the manifest is still the one the operation loaded (`expect_sha256`: nothing is
    written otherwise), then writes the manifest and every changed generated file inside its own undo scope: when
    any write fails (a full disk), everything already written is put back before the error is raised."""

    def __init__(self, m_old: Manifest, values: Mapping[tuple[str, ...], Any]) -> None:
        self.m_old = m_old
        self.values = values
        self.old_text, self.new_text, self.m_new = edited_manifest(m_old, values)
        self._changes: list[Change] = []
        self._written: list[Change] = []
        self._manifest_written = False

    def commit(self) -> list[Path]:
        from .. import generate
        from ..fsutil import atomic_write
        from ..manifest.edit import set_values

        self._changes = [c for c in generate.plan(self.m_new) if c.changed]  # rendered before anything is written
        try:
            set_values(self.m_old.source_path, self.values, expect_sha256=self.m_old.sha256)  # checks, then writes
            self._manifest_written = True
            for change in self._changes:
                atomic_write(change.path, change.new)
                self._written.append(change)
        except BaseException as exc:
            problems = self._restore()
            if problems and isinstance(exc, SwiftDeployError):
                exc.message += f"; restoring the files also failed: {'; '.join(problems)}"
            raise
        return [change.path for change in self._written]

    def rollback(self) -> None:
        """Put back the manifest and every generated file this transaction wrote; OperationFailed naming each file
        that could not be restored (every one is tried)."""
        problems = self._restore()
        if problems:
            raise OperationFailed(
                "could not restore " + "; ".join(problems),
                hint="free the disk, then `swiftdeploy init` rewrites the generated files from the manifest",
            )

    def _restore(self) -> list[str]:
        from ..fsutil import atomic_write
        from ..manifest.edit import restore

        problems = []
        if self._manifest_written:
            try:
                restore(self.m_old.source_path, self.old_text)
                self._manifest_written = False
            except OSError as exc:
                problems.append(f"{self.m_old.source_path}: {exc.strerror or exc}")
        failed = []
        for change in reversed(self._written):
            try:
                if change.old is None:
                    change.path.unlink(missing_ok=True)
                else:
                    atomic_write(change.path, change.old)
            except OSError as exc:
                problems.append(f"{change.path}: {exc.strerror or exc}")
                failed.append(change)
        self._written = failed
        return problems


def run_all(op: Operation, steps: list[tuple[str, Callable[[], Any]]]) -> list[str]:
    """Run every step of an undo even when one fails; the failures, each as "<step>: <error>"."""
    problems = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - every step runs; each failure is reported
            text = exc.message if isinstance(exc, SwiftDeployError) else f"{type(exc).__name__}: {exc}"
            problems.append(f"{what}: {text}")
    return problems


# --- admin listener HTTP --------------------------------------------------------------------------------------


def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request (at most 64 KiB of the answer is read). Raises OperationFailed
    naming the URL when nothing answers."""
    from ..localhttp import NoAnswer, request

    try:
        status, raw = request(method, url, json=body, timeout=timeout, limit=65536)
    except NoAnswer as exc:
        raise OperationFailed(
            f"{method} {url}: no answer ({exc})",
            hint="is the stack deployed? `swiftdeploy status` shows what runs",
        ) from None
    from .. import safejson

    text = raw.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        return status, safejson.loads(text)
    return status, text


@contextlib.contextmanager
def failure_event(op: Operation, event: str, **fields: Any) -> Iterator[None]:
    """Record `event` (a `*_failed` event, e.g. promote_failed) with the error when the block raises anything but
    PolicyBlocked (the gate recorded its own `*_blocked` event) or OperationAborted (`*_aborted` is recorded)."""
    try:
        yield
    except (PolicyBlocked, OperationAborted):
        raise
    except SwiftDeployError as exc:
        op.event(event, error=str(exc), **fields)
        raise
    except Exception as exc:
        op.event(event, error=f"{type(exc).__name__}: {exc}", **fields)
        raise
