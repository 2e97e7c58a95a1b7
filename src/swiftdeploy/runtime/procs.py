"""Process supervision for the local runtime: detached start with a pid file, identity-checked stop, ports.

Each process runs in its own session (start_new_session=True), so it outlives the CLI that started it and its
process group id equals its pid: teardown signals the whole group (nginx master + workers) at once. The pid file
records the process's create time and argv, so a pid that died and was reused by an unrelated program is
recognised as stale and never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import OperationFailed
from ..fsutil import atomic_write
from ..history import now_ts

# Popen objects of the processes this Python process started, so stopping them also reaps them (no zombies,
# no "subprocess is still running" warnings when tests drive the library in-process).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}  # exit codes of reaped children, for error messages


@dataclass
class ProcRecord:
    """What a pid file holds."""

    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    started: str
    port: int | None = None
    spec: str = ""  # fingerprint of argv + env: a redeploy restarts the process only when it changed
    version: str = ""  # an app's APP_VERSION and APP_IMAGE ("" for nginx and for records of older versions)
    image: str = ""

    @classmethod
    def load(cls, path: Path) -> ProcRecord | None:
        """The record of a pid file; None when it is missing or unreadable. Keys this version does not know (a
        file written by another swiftdeploy version) are ignored, so its process can still be stopped."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def save(self, path: Path) -> None:
        atomic_write(Path(path), json.dumps(asdict(self), indent=2) + "\n")


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    pid_path: Path,
    port: int | None = None,
    spec: str = "",
    version: str = "",
    image: str = "",
) -> ProcRecord:
    """Start `argv` detached, output appended to `log_path`, and write its pid file."""
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {now_ts()} swiftdeploy starts {name}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=str(cwd),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise OperationFailed(
                f"cannot start {name}: {' '.join(argv)}: {exc.strerror or exc}",
                hint="check the command (services.command in the manifest) and that the program is installed",
            ) from None
    _CHILDREN[proc.pid] = proc
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        create_time = 0.0  # already gone: is_running() says so, and the caller reports the log
    record = ProcRecord(
        name=name,
        pid=proc.pid,
        create_time=create_time,
        argv=list(argv),
        log=str(log_path),
        started=now_ts(),
        port=port,
        spec=spec,
        version=version,
        image=image,
    )
    record.save(pid_path)
    return record


def _reap(pid: int) -> int | None:
    """Collect the exit status of our own child (avoids zombies); None if not our child or still running."""
    child = _CHILDREN.get(pid)
    if child is not None:
        code = child.poll()
        if code is not None:
            _CHILDREN.pop(pid, None)
            _EXIT_CODES[pid] = code
        return code
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if not done:
        return None
    _EXIT_CODES[pid] = os.waitstatus_to_exitcode(status)
    return _EXIT_CODES[pid]


def exit_code(record: ProcRecord) -> int | None:
    """Exit code of a process that died, when this process started it and could reap it."""
    _reap(record.pid)
    return _EXIT_CODES.get(record.pid)


def is_running(record: ProcRecord | None) -> bool:
    """True only for the very process the record describes (same pid AND create time), not a zombie."""
    import psutil

    if record is None or record.pid <= 0:
        return False
    _reap(record.pid)
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.05:
            return False  # pid reused by another program
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pid_reused(record: ProcRecord) -> bool:
    import psutil

    try:
        proc = psutil.Process(record.pid)
        return abs(proc.create_time() - record.create_time) > 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group `pgid`."""
    import psutil

    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return alive


def stop(record: ProcRecord | None, *, grace: float = 5.0) -> str:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds. Returns what happened:
    "stopped", "killed", "not running" (died on its own / stale pid file)."""
    if record is None:
        return "not running"
    pgid = record.pid
    running = is_running(record)
    if not running and _pid_reused(record):
        return "not running"  # stale pid file: that pid now belongs to another program, never signal it
    if not running and not _group_alive(pgid):
        _reap(record.pid)
        return "not running"
    # Leader dead but its group lives on (e.g. nginx workers): still ours to clean, the group id is unique to it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record) and not _group_alive(pgid):
            return "stopped"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record) and not _group_alive(pgid):
            break
        time.sleep(0.05)
    _CHILDREN.pop(record.pid, None)
    return "killed"


def tail(path: str | Path, n: int = 20, *, max_bytes: int = 64 * 1024) -> list[str]:
    """Last `n` lines of a log file ([] when missing), reading back from its end at most `max_bytes`."""
    return _tail_at(path, n, max_bytes)[0]


def _tail_at(path: str | Path, n: int, max_bytes: int) -> tuple[list[str], int]:
    """(last `n` lines, the file's size when read): reads back in blocks until it has n lines or `max_bytes`."""
    if n <= 0:
        try:
            return [], os.stat(path).st_size
        except OSError:
            return [], 0
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start, data = size, b""
            while start > 0 and data.count(b"\n") <= n and size - start < max_bytes:
                step = min(64 * 1024, start, max_bytes - (size - start))
                start -= step
                handle.seek(start)
                data = handle.read(step) + data
    except OSError:
        return [], 0
    return data.decode("utf-8", "replace").splitlines()[-n:], size


def follow(
    paths: Sequence[Path],
    *,
    tail: int = 100,
    poll: float = 0.2,
    stop: threading.Event | None = None,
    max_bytes: int = 8 * 1024 * 1024,
) -> Iterator[tuple[Path, str]]:
    """(path, line) for the last `tail` lines of each file, then (follow) each line appended to any of them, until
    `stop` is set or the consumer stops iterating. A file that is truncated or replaced is read again from its
    start; a missing one is waited for. Reads at most 1 MiB per file and poll; a line longer than 64 KiB is cut."""
    positions: dict[Path, tuple[int, int | None]] = {}  # path -> (offset read up to, inode)
    pending: dict[Path, bytes] = {}
    for path in paths:
        lines, size = _tail_at(path, tail, max_bytes)
        for line in lines:
            yield path, line
        positions[path] = (size, _inode(path))
        pending[path] = b""
    while not (stop is not None and stop.is_set()):
        for path in paths:
            offset, inode = positions[path]
            try:
                info = os.stat(path)
            except OSError:
                positions[path] = (0, None)
                continue
            if info.st_ino != inode or info.st_size < offset:
                offset, pending[path] = 0, b""  # rotated or truncated: the new file from its start
            if info.st_size > offset:
                try:
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read(min(info.st_size - offset, 1024 * 1024))
                except OSError:
                    continue
                offset += len(chunk)
                *complete, rest = (pending[path] + chunk).split(b"\n")
                if len(rest) > 64 * 1024:
                    complete.append(rest[: 64 * 1024])
                    rest = b""
                pending[path] = rest
                for raw in complete:
                    yield path, raw.decode("utf-8", "replace")
            positions[path] = (offset, info.st_ino)
        if stop is not None:
            stop.wait(poll)
        else:
            time.sleep(poll)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


# --- ports ---------------------------------------------------------------------------------------------------


def bind_problem(host: str, port: int) -> str | None:
    """None when a listener can bind host:port now, else why not ("in use", ...). SO_REUSEADDR like nginx and
    uvicorn, so TIME_WAIT leftovers do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            if exc.errno == errno.EACCES:
                return "permission denied (a port below 1024 needs root)"
            return exc.strerror or str(exc)
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can a listener bind host:port now? (see bind_problem)"""
    return bind_problem(host, port) is None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port_block(count: int, host: str = "127.0.0.1", *, tries: int = 200) -> int:
    """The first of `count` consecutive ports that can all be bound on `host` now. Chosen at random outside the
    kernel's ephemeral range (where client connections take their local ports, so a port found free there may be
    taken a moment later); OperationFailed when no block is found in `tries` attempts."""
    import random

    low, high = 1024, 65535
    try:
        first, last = (int(x) for x in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        first, last = 32768, 60999  # Linux's default range
    low, high = (1024, first - 1) if first - 1024 >= 4096 else (last + 1, 65535)
    for _ in range(tries):
        start = random.randint(low, high - count + 1)  # noqa: S311 - a port number, not a secret
        if all(port_free(port, host) for port in range(start, start + count)):
            return start
    raise OperationFailed(f"no {count} consecutive free ports on {host} between {low} and {high}")


def port_holder_pid(port: int) -> int | None:
    """The pid of the process listening on `port`, if psutil can see it."""
    import psutil

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    return None


def port_holder(port: int) -> str | None:
    """'pid 123 (nginx: master process ...)' for the process listening on `port`, if psutil can see it."""
    import psutil

    pid = port_holder_pid(port)
    if pid is None:
        return None
    try:
        cmd = " ".join(psutil.Process(pid).cmdline()) or psutil.Process(pid).name()
    except psutil.Error:
        cmd = "?"
    return f"pid {pid} ({cmd[:120]})"


def describe_port_in_use(port: int, what: str) -> str:
    holder = port_holder(port)
    return f"port {port} ({what}) is already in use" + (f" by {holder}" if holder else "")
