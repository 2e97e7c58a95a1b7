"""One deploy/promote/rollback/teardown at a time per manifest.

`fcntl.flock` on `<state_dir>/lock`: the kernel drops the lock when its holder dies, so a crashed run never wedges
the next one. The file also records who holds it (pid, host, start time, command) so a refused run can name the
holder. A normal release empties the file; finding holder info when the flock succeeds therefore means the
previous holder died mid-operation, and the new run takes over with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from .errors import LockHeld
from .history import now_ts


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self.path = Path(state_dir) / "lock"
        self.operation = operation
        self.command = command or _command_line(operation)
        self.warning: str | None = None
        self._handle: IO[str] | None = None
        self.remove_on_release = False  # teardown --clean deletes the state folder, lock file included

    def acquire(self) -> DeployLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = self._read(handle, retries=5)
            handle.close()
            holder = describe_holder(info) if info else "a run that is still starting (no holder info yet)"
            raise LockHeld(
                f"another swiftdeploy operation holds the lock {self.path}: {holder}",
                hint="wait for it to finish and retry; if that process is gone the lock frees itself",
            ) from None
        except BaseException:
            handle.close()
            raise
        previous = self._read(handle, retries=0)
        if previous:
            pid = previous.get("pid")
            state = "dead" if isinstance(pid, int) and not _pid_alive(pid) else "no longer holding it"
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
            if self.remove_on_release:
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
