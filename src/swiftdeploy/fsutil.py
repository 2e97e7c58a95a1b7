"""File helpers shared by every writer and reader: atomic replace, so a crash never leaves a half-written file;
bounded reads of regular files only, so a FIFO, a device or a huge file never hangs or floods a reader; and the
`refuse_symlink` of the project-path rule (manifest/paths.py): swiftdeploy follows no symbolic link in the
project (docs/manifest.md#limits).

The temp file of a write is `.<name>.<pid>-<random>.tmp` beside its target. A writer killed between creating it and
the rename leaves it behind; the next write of the same file removes every such file whose writer is gone
(`remove_stale_tmp`), and `teardown --clean` removes them all.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

_TMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.tmp$")


class Refused(OSError):
    """A path swiftdeploy will not read or write (not a regular file, too large, a symbolic link, outside the
    project). `str()` is one sentence naming the path; callers wrap it in the error class of their domain."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(problem)
        self.path = str(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def read_bounded(path: Path | str, limit: int, *, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them. Opened with O_NONBLOCK so a FIFO never
    blocks the open, then refused unless fstat says it is a regular file (a FIFO, /dev/zero, a folder); a file
    longer than `limit` is refused after reading at most limit + 1 bytes. Raises Refused, or the OSError of the
    open (FileNotFoundError, PermissionError, ...)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, a device or a socket)"
            raise Refused(path, f"the {what} is {kind}")
        if info.st_size > limit:
            raise Refused(path, f"the {what} is {info.st_size} bytes, more than the limit of {limit}")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Refused(path, f"the {what} is more than the limit of {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def refuse_symlink(path: Path, what: str) -> None:
    """Raise Refused when `path` itself is a symbolic link (a missing path is fine: it will be created)."""
    if path.is_symlink():
        raise Refused(
            path,
            f"the {what} is a symbolic link (to {os.readlink(path)}); swiftdeploy follows no link in the "
            "project: remove the link",
        )


def atomic_write(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write `text` to `path` via a temp file in the same folder + fsync + rename (atomic on POSIX).

    The rename replaces whatever is at `path` itself: a symbolic link there is replaced by the file, never written
    through (what it pointed at is left as it was)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk mid-write says which file it was writing
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` naming `path` (a write error of the temp file has no name, or the temp file's): the same class, errno
    and message, so the CLI's one line says which file could not be written (errors.describe_os_error)."""
    if exc.errno is None or (exc.filename is not None and Path(str(exc.filename)).parent != path.parent):
        return exc  # not a plain system error, or about another path (a parent folder that is a file)
    return type(exc)(exc.errno, exc.strerror, str(path))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0: nothing is sent; another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_alive(pid: int) -> bool:
    # this process writes one file at a time: a temp file of ours is an old one
    return pid != os.getpid() and pid_alive(pid)


def stale_tmp_files(folder: Path, name: str | None = None) -> list[Path]:
    """Temp files of `atomic_write` in `folder` (of the file `name`, or of any file) whose writer is gone: a write
    that was killed before its rename. A temp file of `name` without a pid (an older swiftdeploy's) counts as stale;
    across every file only names with a writer pid count (a person's own `.x.y.tmp` is left alone)."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TMP.match(entry.name)
        if match is None or (name is not None and match["name"] != name) or (name is None and not match["pid"]):
            continue
        if match["pid"] is not None and _writer_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def remove_stale_tmp(path: Path, *, every_file: bool = False) -> list[Path]:
    """Remove the stale temp files of `path` (`every_file`: of every file in `path`, a folder). The paths removed."""
    path = Path(path)
    stale = stale_tmp_files(path, None) if every_file else stale_tmp_files(path.parent, path.name)
    removed = []
    for tmp in stale:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed
