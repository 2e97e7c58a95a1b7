"""`swiftdeploy abort`: stop a running `rollout` or `promote stable` from another terminal, or end a paused rollout
(docs/operations.md#progressive-delivery).

The running operation holds the lock, so `abort` does not wait for it: it writes an abort request, the file
`<state folder>/abort.json` (atomically; naming who asked, when, and the pid of the holder it is meant for). The
holder looks for a request addressed to its own pid at every tick of its canary watch (every 0.1 s while it waits
for the next scrape, `AbortWatch.sleep`) and between steps, rolls the canary back (all traffic on stable, the canary
removed, mode stable), writes what it did into the request (`done`) and exits 3 ("aborted by <user> at <time>").
`abort` waits for that answer, prints it and removes the request. A request nobody answers (the holder finished
first or died) is removed by `abort`, which then says so (exit 1); one left by a killed `abort` names a pid that no
longer holds the lock, so no later run obeys it.

With no operation running, `abort` ends a paused rollout itself (taking the lock): the same rollback. With nothing
to abort it says so and exits 1.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import OperationAborted, OperationFailed
from ..hooks import run_hooks
from .base import OpResult, Progress

REQUEST_FILE = "abort.json"
MAX_REQUEST_BYTES = 4096
ABORTABLE = ("rollout", "promote_stable")  # the lock holders that look for a request
TICK = 0.1  # seconds between two looks at the request while the watch waits


@dataclass
class AbortRequest:
    """One abort request: who asked (`by`: user@host), when (`at`), for which holder (`pid`, `operation`), and -
    once the holder acted - `done` (what it did)."""

    id: str
    by: str
    at: str
    pid: int
    operation: str
    done: str | None = None
    acted: bool | None = None  # True: rolled back; False: too late (the promotion had begun switching over)

    def describe(self) -> str:
        return f"aborted by {self.by} at {self.at}"

    @classmethod
    def parse(cls, data: Any) -> AbortRequest | None:
        """The request in `data`, or None when it is not one (a torn or foreign file is never obeyed)."""
        if not isinstance(data, dict):
            return None
        try:
            req = cls(
                id=data["id"],
                by=data["by"],
                at=data["at"],
                pid=data["pid"],
                operation=data["operation"],
                done=data.get("done"),
                acted=data.get("acted"),
            )
        except (KeyError, TypeError):
            return None
        strings = (req.id, req.by, req.at, req.operation)
        if not all(isinstance(x, str) and 0 < len(x) <= 200 for x in strings):
            return None
        if isinstance(req.pid, bool) or not isinstance(req.pid, int) or req.pid <= 0:
            return None
        if req.done is not None and not isinstance(req.done, str):
            return None
        return req


def request_path(state_dir: Path) -> Path:
    return Path(state_dir) / REQUEST_FILE


def read_request(state_dir: Path) -> AbortRequest | None:
    """The abort request in the state folder (at most MAX_REQUEST_BYTES read), None when there is none or it is not
    a valid request."""
    from ..fsutil import read_bounded

    try:  # a regular file only (a FIFO planted there never blocks), at most MAX_REQUEST_BYTES
        raw = read_bounded(request_path(state_dir), MAX_REQUEST_BYTES, what="abort request")
    except OSError:  # missing, refused (fsutil.Refused), unreadable
        return None
    try:
        return AbortRequest.parse(json.loads(raw.decode("utf-8")))
    except ValueError:
        return None


def _write(state_dir: Path, req: AbortRequest) -> None:
    from ..fsutil import atomic_write

    atomic_write(request_path(state_dir), json.dumps(asdict(req)) + "\n", mode=0o600)


def who() -> str:
    """`user@host` for "aborted by ...": the login name (LOGNAME/USER), else the uid."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name: the uid says who
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


class AbortWatch:
    """What a lock holder (rollout, promote stable) uses to notice an abort request meant for it: `check()` raises
    OperationAborted; `sleep(seconds)` sleeps in TICK slices, checking before each (the canary watch's `sleep`)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.pid = os.getpid()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the last request file read
        self._request: AbortRequest | None = None

    def pending(self) -> AbortRequest | None:
        """A request addressed to this process and not answered yet (the file is read only when it changed)."""
        try:
            st = request_path(self.state_dir).stat()
        except OSError:
            self._seen = self._request = None
            return None
        key = (st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._seen = key
            self._request = read_request(self.state_dir)
        req = self._request
        return req if req is not None and req.pid == self.pid and req.done is None else None

    def check(self) -> None:
        req = self.pending()
        if req is not None:
            raise OperationAborted(req.describe(), request=req)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(TICK, left))

    def answer(self, req: AbortRequest, done: str, *, acted: bool = True) -> None:
        """Tell the waiting `abort` what happened (best effort: the history has it too)."""
        req.done, req.acted = done, acted
        with contextlib.suppress(OSError):
            _write(self.state_dir, req)

    def answer_late(self, done: str) -> None:
        """A request that arrived after the point of no return (the switch-over had begun): answered, not obeyed."""
        req = self.pending()
        if req is not None:
            self.answer(req, done, acted=False)


def abort(manifest_path: Path | str, progress: Progress | None = None, timeout: float = 30.0) -> OpResult:
    """Abort the running `rollout`/`promote stable` (through a request; waits up to `timeout` s for its answer), or
    the paused rollout (taking the lock). OperationFailed (exit 1) when there is nothing to abort, when another
    operation holds the lock, or when the holder ended without acting on the request."""
    from ..lock import describe_holder, inspect, state_dir_of

    say = progress or (lambda _message: None)
    state_dir = state_dir_of(manifest_path)
    status = inspect(state_dir)
    if status.state != "held":
        from .rollout import abort_paused

        return abort_paused(manifest_path, progress)
    holder = status.holder or {}
    operation = holder.get("operation")
    if operation not in ABORTABLE:
        name = str(operation or "an operation").replace("_", " ")
        raise OperationFailed(
            f"nothing to abort: {name} holds the lock ({describe_holder(holder)}); only a running rollout or "
            "promote stable can be aborted",
            hint="let it finish; `swiftdeploy abort` again then ends a paused rollout",
        )
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        raise OperationFailed(
            f"the lock holder ({describe_holder(holder)}) is not a process of this host: it cannot be asked to abort",
            hint="run `swiftdeploy abort` on the host that runs it",
        )
    from ..history import now_ts

    started = time.monotonic()
    req = AbortRequest(id=uuid.uuid4().hex, by=who(), at=now_ts(), pid=pid, operation=operation)
    _write(state_dir, req)
    say(f"asked {str(operation).replace('_', ' ')} (pid {pid}) to abort; waiting for it to roll back")
    try:
        answer = _wait_for_answer(state_dir, req, timeout)
    finally:
        current = read_request(state_dir)
        if current is not None and current.id == req.id:
            with contextlib.suppress(OSError):
                request_path(state_dir).unlink()
    name = str(operation).replace("_", " ")
    result = OpResult(operation="abort", seconds=time.monotonic() - started)
    if answer is None:
        raise OperationFailed(
            f"{name} (pid {pid}) ended without acting on the abort (it finished or stopped first)",
            hint="`swiftdeploy status` and `swiftdeploy history` show what it did",
        )
    if not answer.acted:
        raise OperationFailed(f"{name} (pid {pid}) did not abort: {answer.done}")
    result.message = f"{name} (pid {pid}) {req.describe()}: {answer.done}"
    return result


def _wait_for_answer(state_dir: Path, req: AbortRequest, timeout: float) -> AbortRequest | None:
    """The answered request; None when the holder no longer holds the lock without answering. OperationFailed
    after `timeout` seconds."""
    from ..lock import inspect

    deadline = time.monotonic() + timeout
    while True:
        current = read_request(state_dir)
        if current is not None and current.id == req.id and current.done is not None:
            return current
        status = inspect(state_dir)
        if status.state != "held" or (status.holder or {}).get("pid") != req.pid:
            current = read_request(state_dir)  # answered just before it let go?
            if current is not None and current.id == req.id and current.done is not None:
                return current
            return None
        if time.monotonic() >= deadline:
            raise OperationFailed(
                f"pid {req.pid} did not answer the abort request within {timeout:g}s (it is busy, or hung)",
                hint="it looks for the request between steps and while it watches the canary; `swiftdeploy status` "
                "shows what runs, `swiftdeploy rollback` once it has finished",
            )
        time.sleep(0.05)


@contextlib.contextmanager
def no_sigint() -> Any:
    """Ctrl-C waits until the block is done (an automatic rollback must not stop half-way): a SIGINT that arrives
    meanwhile is raised as KeyboardInterrupt once the block is over. Only in the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(*caught[0])


def roll_back_aborted(op: Any, m: Any, exc: OperationAborted, watch: AbortWatch, event: str, **fields: Any) -> None:
    """The holder's answer to an abort request: the canary rolled back (ops.rollback.remove_canary), `event`
    recorded with who asked and when, the request answered; `exc` then says what was done."""
    from .rollback import remove_canary

    req = exc.request
    with no_sigint():
        remove_canary(op, m)
    done = f"{m.canary_name} removed, all traffic on stable ({m.services.version})"
    op.event(event, by=req.by, requested_at=req.at, **fields)
    watch.answer(req, done)  # before the hooks: `abort` waits for this answer
    exc.message = f"{op.name.replace('_', ' ')} {req.describe()}: {done}"
    run_hooks(op, "post_rollback", verdict="aborted")
