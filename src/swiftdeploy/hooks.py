"""Hooks: the manifest's own executables at fixed points of an operation (docs/operations.md, "Hooks").

`run_hooks(op, "pre_deploy")` runs every argv the manifest lists under `hooks.pre_deploy`, one after the other:

- working directory: the manifest's folder; stdin: /dev/null; environment: swiftdeploy's own plus the SWIFTDEPLOY_*
  variables of `hook_env` (every one always set, empty when it does not apply);
- in its own session (process group), for at most `hooks.timeout` seconds: then the group gets SIGTERM and, 2 s
  later, SIGKILL. When the hook exits, whatever it left running in its group is ended the same way: a hook never
  leaves a process behind;
- stdout and stderr are read as they come, keeping only the last OUTPUT_TAIL bytes of each (memory stays bounded
  whatever the hook prints);
- every run is a `hook_run` history record (`hook`, `operation`, `argv`, `ok`, `exit_code`, `timed_out`, `seconds`,
  `stderr_tail`).

A failing `pre_*` hook (non-zero exit, timeout, not executable) raises HookFailed (exit 1) with its stderr tail, and
the hooks after it do not run; the caller runs pre hooks before it changes anything. A failing `post_*`/`on_*` hook
is a warning of the operation (`op.warn`) and changes nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import OperationFailed

if TYPE_CHECKING:
    from .ops.base import Operation

EVENTS = ("pre_deploy", "post_deploy", "pre_promote", "post_promote", "on_blocked", "post_rollback")
OUTPUT_TAIL = 64 * 1024  # bytes kept of each of a hook's stdout and stderr
SHOWN_LINES = 10  # stderr lines a failure shows
RECORD_CHARS = 2000  # stderr characters a hook_run record keeps
ENV_RECORD_MAX = 64 * 1024  # SWIFTDEPLOY_RECORD larger than this keeps only the record's scalar fields
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a hook's process group


class HookFailed(OperationFailed):
    """A pre_* hook failed: the operation stops before changing anything (exit 1)."""


def hook_env(op: Operation, event: str, record: dict[str, Any] | None, context: dict[str, Any]) -> dict[str, str]:
    """The SWIFTDEPLOY_* variables of one hook run: `context` first, then the record's own fields."""
    record = record or {}

    def value(name: str) -> str:
        found = context.get(name, record.get(name))
        return "" if found is None else str(found)

    text = json.dumps(record, default=str)
    if len(text) > ENV_RECORD_MAX:
        scalars = {k: v for k, v in record.items() if not isinstance(v, dict | list)}
        text = json.dumps({**scalars, "truncated": True}, default=str)
    return {
        "SWIFTDEPLOY_EVENT": event,
        "SWIFTDEPLOY_OPERATION": op.name,
        "SWIFTDEPLOY_SERVICE": op.m.services.name,
        "SWIFTDEPLOY_RUNTIME": op.m.runtime,
        "SWIFTDEPLOY_MANIFEST": str(op.path.resolve()),
        "SWIFTDEPLOY_VERSION": value("version"),
        "SWIFTDEPLOY_IMAGE": value("image"),
        "SWIFTDEPLOY_VERDICT": value("verdict"),
        "SWIFTDEPLOY_WEIGHT": value("weight"),
        "SWIFTDEPLOY_RECORD": text,
    }


def run_hooks(op: Operation, event: str, **context: Any) -> None:
    """Run the manifest's `hooks.<event>` for operation `op` (see the module docstring). `context`: values for the
    SWIFTDEPLOY_* variables (version, image, verdict, weight) over those of the operation's last history record."""
    from . import history

    if event not in EVENTS:
        raise ValueError(f"unknown hook event {event!r}")
    m = op.m
    hooks = getattr(m.hooks, event)
    if not hooks:
        return
    env = {**os.environ, **hook_env(op, event, getattr(op, "last_record", None), context)}
    timeout = m.hooks.timeout
    for argv in hooks:
        shown = " ".join(argv)
        op.progress(f"{event} hook: {shown}")
        run = _run(list(argv), cwd=str(m.base_dir), env=env, timeout=timeout)
        with contextlib.suppress(Exception):  # the hook's outcome matters more than its record
            history.append(m.history_path, "hook_run", rotation=m.history.rotation, runtime=m.runtime, hook=event,
                           operation=op.name, argv=list(argv), ok=run.ok, exit_code=run.exit_code,
                           timed_out=run.timed_out, seconds=round(run.seconds, 3),
                           stderr_tail=run.stderr[-RECORD_CHARS:])  # fmt: skip
        if run.ok:
            continue
        what = f"{event} hook `{shown}` {run.why()}"
        tail = run.stderr_lines()
        if event.startswith("pre_"):
            raise HookFailed(
                what + "; nothing was changed" + ("\n  stderr:\n" + tail if tail else ""),
                hint=f"fix the hook, or remove it from hooks.{event} in the manifest",
            )
        op.warn(what + " (the operation is not affected)" + (f"; stderr: {run.stderr_last()}" if tail else ""))


class _Run:
    def __init__(self) -> None:
        self.exit_code: int | None = None
        self.timed_out = False
        self.error: str | None = None  # could not start it at all
        self.seconds = 0.0
        self.stderr = ""
        self.timeout = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def why(self) -> str:
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"did not finish within {self.timeout:g}s and was killed"
        if self.exit_code is not None and self.exit_code < 0:
            return f"was killed by signal {-self.exit_code}"
        return f"failed (exit code {self.exit_code}, {self.seconds:.1f}s)"

    def stderr_lines(self) -> str:
        lines = self.stderr.rstrip().splitlines()[-SHOWN_LINES:]
        return "\n".join(f"    {line[:500]}" for line in lines)

    def stderr_last(self) -> str:
        lines = self.stderr.rstrip().splitlines()
        return lines[-1][:500] if lines else ""


def _tail_reader(stream: Any, keep: bytearray) -> threading.Thread:
    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read1(65536):
                keep.extend(chunk)
                if len(keep) > OUTPUT_TAIL:
                    del keep[: len(keep) - OUTPUT_TAIL]

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _kill_group(pgid: int) -> None:
    """SIGTERM the group, SIGKILL what is left after KILL_GRACE seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _run(argv: list[str], *, cwd: str, env: dict[str, str], timeout: float) -> _Run:
    run = _Run()
    run.timeout = timeout
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: the timeout and the cleanup reach its children
        )
    except OSError as exc:
        run.error = exc.strerror or str(exc)
        run.seconds = time.monotonic() - started
        return run
    out, err = bytearray(), bytearray()
    readers = [_tail_reader(proc.stdout, out), _tail_reader(proc.stderr, err)]
    try:
        try:
            run.exit_code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.timed_out = True
    finally:
        _kill_group(proc.pid)  # the timed-out hook, or what a finished one left running in its group
        if run.exit_code is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.exit_code = proc.wait(timeout=KILL_GRACE + 1)
        for reader in readers:
            reader.join(timeout=1.0)  # a grandchild that left the group may hold a pipe: do not wait for it
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
    run.seconds = time.monotonic() - started
    run.stderr = err.decode("utf-8", "replace")
    return run
