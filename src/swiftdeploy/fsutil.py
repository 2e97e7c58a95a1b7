"""File helpers shared by every writer: atomic replace, so a crash never leaves a half-written file.

The temp file of a write is `.<name>.<pid>-<random>.tmp` beside its target. A writer killed between creating it and
the rename leaves it behind; the next write of the same file removes every such file whose writer is gone
(`remove_stale_tmp`), and `teardown --clean` removes them all.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

_TMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.tmp$")


def atomic_write(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write `text` to `path` via a temp file in the same folder + fsync + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one file at a time: a temp file of ours is an old one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
