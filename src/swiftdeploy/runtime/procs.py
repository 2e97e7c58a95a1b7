"""Process supervision for the local runtime: detached start with a pid file, identity-checked stop, ports.

Each process runs in its own session (start_new_session=True), so it outlives the CLI that started it and its
process group id equals its pid: teardown signals the whole group (nginx master + workers) at once. The pid file
records the process's create time and argv, so a pid that died and was reused by an unrelated program is
recognised as stale and never signalled.

Only our own processes are signalled (docs/operations.md#failure-behaviour): a pid file is read only when the
current user owns it and nobody else may write it (`ProcRecord.load`), and a live process counts as the recorded one
only when its pid, start time, owner (uid), executable and command line all match the record (`identity_problem`).
Anything else is refused with a warning naming the file, the pid and why (`take_warnings`), and left alone. Every
process swiftdeploy starts carries `SWIFTDEPLOY_PIDS=<its pid folder>` in its environment, so one whose pid file was
never written (a run killed in between) is still recognised as ours (`orphans`).
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import OperationFailed
from ..fsutil import atomic_write
from ..history import now_ts

# Popen objects of the processes this Python process started, so stopping them also reaps them (no zombies,
# no "subprocess is still running" warnings when tests drive the library in-process).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}  # exit codes of reaped children, for error messages
_WARNINGS: list[str] = []  # what was refused (a pid file, a process): the operation says it (take_warnings)

MARKER = "SWIFTDEPLOY_PIDS"  # in the environment of every process we start: the pid folder it belongs to


def warn(message: str) -> None:
    """Remember a refusal for the operation to say (once; at most 100 kept until an operation takes them, so a
    library caller that never does holds a bounded list)."""
    if message not in _WARNINGS and len(_WARNINGS) < 100:
        _WARNINGS.append(message)


def take_warnings() -> list[str]:
    """The refusals since the last call (each once), cleared."""
    found = list(_WARNINGS)
    _WARNINGS.clear()
    return found


def file_problem(path: Path) -> str | None:
    """Why a pid (or record) file must not be trusted, or None: not a regular file, owned by another user, or
    writable by others (a forged file could name any process)."""
    import stat

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by the current user (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"it is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


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
    uid: int = -1  # the owner, executable and command line the process was seen with (-1/"": an older record)
    exe: str = ""
    cmdline: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> ProcRecord | None:
        """The record of a pid file; None when it is missing, unreadable or refused (`file_problem`: said as a
        warning, the process is left alone). Keys this version does not know (a file written by another swiftdeploy
        version) are ignored, so its process can still be stopped."""
        path = Path(path)
        problem = file_problem(path)
        try:
            if problem is None:
                data = json.loads(path.read_text(encoding="utf-8"))
                known = {f.name for f in fields(cls)}
                record = cls(**{k: v for k, v in data.items() if k in known})
                record.source = str(path)
                return record
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        pid = pid_named_in(path)
        warn(f"refused the pid file {path}" + (f" (pid {pid})" if pid else "") + f": {problem}; "
             "that process was left alone (remove the file once you checked it)")  # fmt: skip
        return None

    def save(self, path: Path) -> None:
        atomic_write(Path(path), json.dumps(asdict(self), indent=2) + "\n")
        self.source = str(path)

    def where(self) -> str:
        return getattr(self, "source", "") or f"the record of {self.name}"


def pid_named_in(path: Path) -> int | None:
    """The pid a refused file names, for the warning (read at most 4 KiB, never trusted)."""
    try:
        with open(path, "rb") as handle:
            pid = json.loads(handle.read(4096)).get("pid")
        return pid if isinstance(pid, int) else None
    except (OSError, ValueError, AttributeError):
        return None


def _observe(record: ProcRecord) -> None:
    """Fill in the owner, executable and command line of the running process (at start, and again once it is
    healthy: a command that execs another program is recorded as what it became)."""
    import psutil

    try:
        proc = psutil.Process(record.pid)
        with proc.oneshot():
            record.uid, record.exe, record.cmdline = proc.uids().real, proc.exe(), proc.cmdline()
    except (psutil.Error, OSError):
        pass


def _joined(cmdline: Sequence[str]) -> str:
    return " ".join(part for part in cmdline if part).strip()


def identity_problem(record: ProcRecord, proc: object) -> str | None:
    """Why the live process `proc` (psutil.Process) is not the one `record` describes, or None. Its owner (uid) must
    be the recorded one; then either its environment carries our marker for the record's pid folder (it survives
    an exec: `sh -c 'exec app'`, `npm start`), or its executable and command line are the recorded ones (nginx
    rewrites its environment, and its command line to `nginx: master process <argv>`, so containing it counts)."""
    import psutil

    assert isinstance(proc, psutil.Process)
    try:
        with proc.oneshot():
            uid, exe, cmdline = proc.uids().real, proc.exe(), proc.cmdline()
    except psutil.AccessDenied:
        return "its owner and command cannot be read (not our process)"
    except psutil.Error as exc:
        return f"it cannot be inspected ({type(exc).__name__})"
    expected_uid = record.uid if record.uid >= 0 else os.geteuid()
    if uid != expected_uid:
        return f"it runs as uid {uid}, not uid {expected_uid}"
    source = getattr(record, "source", "")
    if source:
        try:
            marker = proc.environ().get(MARKER)
        except (psutil.Error, OSError):
            marker = None
        if marker is not None and marker == str(Path(source).parent):
            return None
    if record.exe and exe != record.exe:
        return f"it runs {exe}, not {record.exe}"
    live = _joined(cmdline)
    known = [c for c in (_joined(record.cmdline), _joined(record.argv)) if c]
    if known and not any(live == c or c in live for c in known):
        return f"its command line is {live[:120]!r}, not {known[0][:120]!r}"
    return None


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
                env={**env, MARKER: str(Path(pid_path).parent)},
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
    _observe(record)
    record.save(pid_path)
    return record


def observe_healthy(record: ProcRecord) -> None:
    """Record what the process runs now that it answers (see `_observe`); saved to its pid file when it has one."""
    _observe(record)
    path = getattr(record, "source", "")
    if path and Path(path).exists():
        record.save(Path(path))


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


def _state(record: ProcRecord | None) -> str:
    """ "ours" (the very process the record describes: pid, create time, owner, executable and command line),
    "gone" (nothing has that pid, or a zombie), "reused" (another program got the pid: other start time) or
    "refused" (same pid and start time but not the recorded process: warned, never signalled)."""
    import psutil

    if record is None or record.pid <= 0:
        return "gone"
    _reap(record.pid)
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.05:
            return "reused" if proc.status() != psutil.STATUS_ZOMBIE else "gone"
        if proc.status() == psutil.STATUS_ZOMBIE:
            return "gone"
    except psutil.Error:
        return "gone"
    problem = identity_problem(record, proc)
    if problem is not None:
        if _dying(proc):  # a process in the middle of exiting loses its exe link before it is a zombie
            _reap(record.pid)
            return "gone"
        warn(f"refused to signal pid {record.pid} recorded in {record.where()}: {problem}; it was left alone")
        return "refused"
    return "ours"


def _dying(proc: object, wait: float = 0.5) -> bool:
    """Whether a process whose identity could not be read is exiting: within `wait` seconds it is a zombie or gone
    (a SIGKILLed process under load shows neither its executable nor its command line for a moment)."""
    import psutil

    deadline = time.monotonic() + wait
    while True:
        try:
            if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):  # type: ignore[attr-defined]
                return True
        except psutil.Error:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def is_running(record: ProcRecord | None) -> bool:
    """True only for the very process the record describes (`_state`), not a zombie. A process with the recorded
    pid and start time that is not the recorded one is refused with a warning and left alone."""
    return _state(record) == "ours"


def _group_members(pgid: int) -> list[object]:
    """Live (non-zombie) processes in process group `pgid` (psutil.Process objects)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def group_alive(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group `pgid`."""
    return [proc.pid for proc in _group_members(pgid)]  # type: ignore[attr-defined]


def _member_problem(record: ProcRecord, proc: object) -> str | None:
    """Why a process left in the group of a dead leader is not ours: another owner, or another executable than
    the leader's (nginx workers run the master's binary)."""
    import psutil

    assert isinstance(proc, psutil.Process)
    try:
        uid, exe = proc.uids().real, proc.exe()
    except psutil.Error as exc:
        return f"pid {proc.pid} cannot be inspected ({type(exc).__name__})"
    expected_uid = record.uid if record.uid >= 0 else os.geteuid()
    if uid != expected_uid:
        return f"pid {proc.pid} runs as uid {uid}, not uid {expected_uid}"
    source = getattr(record, "source", "")
    with contextlib.suppress(psutil.Error, OSError):
        if source and proc.environ().get(MARKER) == str(Path(source).parent):
            return None  # started by us for this pid folder (a child of the app)
    wanted = record.exe or (os.path.realpath(record.argv[0]) if record.argv and os.path.isabs(record.argv[0]) else "")
    if wanted and exe != wanted:
        return f"pid {proc.pid} runs {exe}, not {wanted}"
    return None


def orphaned_group(record: ProcRecord | None) -> list[int]:
    """Pids left in the group of a recorded leader that is gone (nginx workers whose master was SIGKILLed), when
    every one of them is ours; [] when the leader runs, nothing is left, or something there is not ours (warned)."""
    if record is None or _state(record) != "gone":
        return []
    members = _group_members(record.pid)
    problems = [p for p in (_member_problem(record, proc) for proc in members) if p]
    if problems:
        warn(f"refused to signal process group {record.pid} recorded in {record.where()}: {'; '.join(problems)}; "
             "it was left alone")  # fmt: skip
        return []
    return [proc.pid for proc in members]  # type: ignore[attr-defined]


def stop(record: ProcRecord | None, *, grace: float = 5.0) -> str:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds. Returns what happened:
    "stopped", "killed", "not running" (died on its own / stale pid file), "refused" (the pid is taken by a process
    that is not the recorded one: warned, never signalled)."""
    if record is None:
        return "not running"
    pgid = record.pid
    state = _state(record)
    if state in ("reused", "refused"):
        return "refused" if state == "refused" else "not running"  # another program has that pid: never signal it
    if state == "gone" and not orphaned_group(record):
        _reap(record.pid)
        return "not running"
    # Ours: the verified leader (its own session: the group id is its pid), or what is left of its group when it
    # died (e.g. nginx workers), every member checked.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not _alive(record) and not group_alive(pgid):
            return "stopped"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not _alive(record) and not group_alive(pgid):
            break
        time.sleep(0.05)
    _CHILDREN.pop(record.pid, None)
    return "killed"


def _alive(record: ProcRecord) -> bool:
    """The recorded leader is still there (pid and start time; identity was checked before signalling)."""
    import psutil

    try:
        proc = psutil.Process(record.pid)
        return abs(proc.create_time() - record.create_time) <= 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def orphans(pids_dir: Path, known: set[int], *, nginx_cwd: Path | None = None) -> list[int]:
    """Live processes of ours (same uid) started for `pids_dir` (their environment says MARKER=pids_dir; nginx,
    which rewrites its environment, runs with cwd `nginx_cwd`) that are not in `known`: left by a run killed
    between starting them and recording them, or recorded in a file that was lost."""
    import psutil

    found = []
    me = os.getpid()
    nginx_dir = os.path.realpath(nginx_cwd) if nginx_cwd is not None else None  # what /proc/<pid>/cwd shows
    for proc in psutil.process_iter(["pid", "uids", "status", "name", "cwd"]):
        try:
            if proc.pid in known or proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.info["uids"] is None or proc.info["uids"].real != os.geteuid():
                continue
            if nginx_dir is not None and proc.info["name"] == "nginx" and proc.info["cwd"] == nginx_dir:
                found.append(proc.pid)
                continue
            if proc.environ().get(MARKER) == str(pids_dir):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def kill_pids(pids: Sequence[int], *, grace: float = 5.0) -> None:
    """SIGTERM each pid, SIGKILL what is left after `grace` seconds (pids already checked to be ours)."""
    import psutil

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5.0)
    for pid in pids:
        _reap(pid)


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
