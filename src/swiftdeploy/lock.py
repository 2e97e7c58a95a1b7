"""One deploy/promote/rollback/teardown at a time per manifest.

`fcntl.flock` on `<state_dir>/lock`: the kernel drops the lock when its holder dies, so a crashed run never wedges
the next one. The file also records who holds it (pid, host, start time, command) so a refused run can name the
holder. A normal release empties the file; finding holder info when the flock succeeds therefore means the
previous holder died mid-operation, and the new run takes over with a warning.

`inspect(state_dir)` says who holds the lock, since when, and whether that holder still lives (`swiftdeploy lock
status`); `release(state_dir, force=...)` clears a stale one and breaks a live holder's only with `force`
(`swiftdeploy lock release`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from .errors import LockHeld, OperationFailed
from .fsutil import pid_alive
from .history import now_ts

LOCK_FILE = "lock"


def state_dir_of(manifest_path: Path | str) -> Path:
    """The folder of the lock (and of every runtime state file) for a manifest: `.swiftdeploy` next to it, the same
    place as `Manifest.state_dir`, known before the manifest is loaded."""
    return Path(manifest_path).resolve().parent / ".swiftdeploy"


def _command_line(operation: str) -> str:
    """What a refused run shows as the holder's command: the CLI line, or the library call from a script."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if program in ("swiftdeploy", "__main__.py"):
        return " ".join(["swiftdeploy", *sys.argv[1:]])
    return f"swiftdeploy.ops.{operation} from {program or 'python'}"


def describe_holder(info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    host = info.get("host", "?")
    started = info.get("started", "?")
    command = info.get("command")
    text = f"pid {pid} on {host}, started {started}"
    return f"{text} ({command})" if command else text


class DeployLock:
    """Context manager: `with DeployLock(m.state_dir, "deploy") as lock: ...`; `lock.warning` is set after a
    takeover of a lock left behind by a dead run (the CLI prints it)."""

    def __init__(self, state_dir: Path, operation: str, *, command: str | None = None) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.operation = operation
        self.command = command or _command_line(operation)
        self.warning: str | None = None
        self._handle: IO[str] | None = None
        self.remove_on_release = False  # teardown --clean deletes the state folder, lock file included

    def acquire(self) -> DeployLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.parent.is_symlink():
            raise OperationFailed(
                f"{self.path.parent}: the state folder is a symbolic link; swiftdeploy follows no link in the project",
                hint="remove the link (swiftdeploy creates .swiftdeploy itself)",
            )
        handle = _open_lock(self.path, create=True)
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Give a starting holder a moment to write its info; then once more before calling it held (a
                # `lock status` probe holds the file for an instant only).
                self._read(handle, retries=5)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = self._read(handle, retries=0)
            handle.close()
            holder = describe_holder(info) if info else "a run that is still starting (no holder info yet)"
            raise LockHeld(
                f"another swiftdeploy operation holds the lock {self.path}: {holder}",
                hint="wait for it to finish and retry (`swiftdeploy lock status` shows the holder)",
            ) from None
        except BaseException:
            handle.close()
            raise
        previous = self._read(handle, retries=0)
        if previous:
            pid = previous.get("pid")
            state = "dead" if isinstance(pid, int) and not pid_alive(pid) else "no longer holding it"
            self.warning = (
                f"took over the lock left by an interrupted run ({describe_holder(previous)}; {state}); "
                "check `swiftdeploy status` — that run may have stopped half-way"
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now_ts(),
            "operation": self.operation,
            "command": self.command,
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if self.remove_on_release and _same_file(handle, self.path):
                # (not when `lock release --force` replaced the file meanwhile: that one belongs to another run)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            else:
                handle.seek(0)
                handle.truncate()  # an empty file = released cleanly (see module docstring)
                handle.flush()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    @staticmethod
    def _read(handle: IO[str], retries: int) -> dict[str, Any] | None:
        # The holder writes its info right after taking the flock; give it a moment before giving up.
        for attempt in range(retries + 1):
            handle.seek(0)
            text = handle.read().strip()
            if text:
                try:
                    data = json.loads(text)
                    return data if isinstance(data, dict) else None
                except ValueError:
                    pass
            if attempt < retries:
                time.sleep(0.02)
        return None

    def __enter__(self) -> DeployLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock(path: Path, *, create: bool) -> IO[str]:
    """The lock file, never through a symbolic link (O_NOFOLLOW: a link there is refused, never truncated or
    written through): with `create` for reading and appending (created when missing), else for reading only
    (FileNotFoundError when there is none)."""
    access = os.O_RDWR | os.O_APPEND | os.O_CREAT if create else os.O_RDONLY
    try:
        fd = os.open(path, access | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except FileNotFoundError:
        raise
    except OSError as exc:
        problem = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise OperationFailed(
            f"cannot open the lock file {path}: {problem}",
            hint="remove what is in the way (swiftdeploy creates the lock file itself)",
        ) from None
    return os.fdopen(fd, "a+" if create else "r", encoding="utf-8")


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        mine, now = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


# --- inspecting and releasing (swiftdeploy lock status | release) --------------------------------------------


@dataclass
class LockStatus:
    """What `inspect` found. `state`: `free` (nobody holds it), `held` (a run holds the flock now) or `stale`
    (nobody holds it, but the file still names the run that took it: that run died mid-operation; the next run
    takes over with a warning). `holder` is the recorded info (pid, host, started, operation, command);
    `holder_alive`: whether that pid still runs (None when it ran on another host or nothing is recorded)."""

    path: Path
    state: Literal["free", "held", "stale"]
    holder: dict[str, Any] | None = None
    holder_alive: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "state": self.state, "holder": self.holder, "holder_alive": self.holder_alive}

    def describe(self) -> str:
        """One line: who holds it and since when, or that it is free."""
        if self.state == "free":
            return f"nobody holds the lock ({self.path})"
        who = describe_holder(self.holder) if self.holder else "a run that is still starting (no holder info yet)"
        alive = {True: "alive", False: "no longer running", None: "on another host: not checked"}[self.holder_alive]
        if self.state == "stale":
            return f"stale: left by {who}, which died mid-operation (pid {alive}); nobody holds it now"
        return f"held by {who}; pid {alive}"


def _holder_alive(info: dict[str, Any] | None) -> bool | None:
    if not info or info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return None
    return pid_alive(info["pid"])


def inspect(state_dir: Path | str) -> LockStatus:
    """The lock of the state folder, without waiting: free, held (by whom, since when) or stale."""
    path = Path(state_dir) / LOCK_FILE
    try:
        handle = _open_lock(path, create=False)
    except FileNotFoundError:
        return LockStatus(path, "free")
    with handle:
        try:
            # A shared lock for an instant: it fails while a run holds the exclusive one and changes nothing.
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = DeployLock._read(handle, retries=5)
            return LockStatus(path, "held", info, _holder_alive(info))
        try:
            info = DeployLock._read(handle, retries=0)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    if not info:
        return LockStatus(path, "free")
    return LockStatus(path, "stale", info, _holder_alive(info))


def release(state_dir: Path | str, *, force: bool = False) -> LockStatus:
    """Release the lock of the state folder; returns what `inspect` found before.

    Free: nothing to do. Stale: the dead run's info is cleared (taking the lock for a moment). Held by a run whose
    pid is gone (its lock lives on in a process that inherited the file): the lock file is removed. Held by a live
    run, or by one on another host: LockHeld (exit 1) naming it, unless `force` - then the lock file is removed,
    so the next run takes a new lock while the holder keeps running (it is not signalled)."""
    status = inspect(state_dir)
    if status.state == "free":
        return status
    if status.state == "stale":
        with _open_lock(status.path, create=True) as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return release(state_dir, force=force)  # a run took it meanwhile: judge that one
            try:
                handle.seek(0)
                handle.truncate()
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return status
    if status.holder_alive is not False and not force:
        raise LockHeld(
            f"the lock {status.path} is {status.describe()}: not released",
            hint="let that run finish, or stop it; `swiftdeploy lock release --force` breaks the lock of a live or "
            "hung run (it keeps running and may still change the stack)",
        )
    with contextlib.suppress(FileNotFoundError):
        status.path.unlink()
    return status
