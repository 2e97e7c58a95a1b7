"""Generated files on disk: what they should say (`files`), what would change (`plan`), write the changes (`write`).

The texts come from the pure builders in `swiftdeploy.render`; this module does their I/O: it reads the policy
files they need (`load_policy_set`), compares the texts with the disk and writes them (atomically, one file at a
time, only files whose text changed). Drift is `[c for c in plan(m) if c.changed]` (`init --check`, `validate`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import OperationFailed
from .fsutil import Refused, atomic_write, read_bounded, refuse_symlink, remove_stale_tmp

MAX_GENERATED_BYTES = 16 * 1024 * 1024  # a file on disk longer than this is not one of ours

if TYPE_CHECKING:
    from .manifest import Manifest


@dataclass(frozen=True)
class Change:
    """One generated file: where it goes, its text on disk now (None when missing) and the text it should have."""

    relpath: str
    path: Path
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def status(self) -> str:
        """'created', 'updated' or 'unchanged'."""
        if self.old is None:
            return "created"
        return "updated" if self.changed else "unchanged"

    def diff(self) -> str:
        """Unified diff from the file on disk to the text the manifest produces ("" when unchanged)."""
        if not self.changed:
            return ""
        old = (self.old or "").splitlines(keepends=True)
        new = self.new.splitlines(keepends=True)
        before = "/dev/null" if self.old is None else f"a/{self.relpath}"
        lines = difflib.unified_diff(old, new, fromfile=before, tofile=f"b/{self.relpath}")
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def files(m: Manifest) -> dict[str, str]:
    """Relative path (under m.out_dir) -> text of every generated file: reads the policies, then renders."""
    from .policy.bundle import load_policy_set
    from .render import render_all
    from .render.stack import nginx_user

    return render_all(m, load_policy_set(m), nginx_user=nginx_user())


def plan(m: Manifest) -> list[Change]:
    """Every generated file with its current and wanted text. Renders everything before touching the disk."""
    changes = []
    for relpath, text in files(m).items():
        path = m.out_dir / relpath
        changes.append(Change(relpath=relpath, path=path, old=_read(m.out_dir, relpath), new=text))
    return changes


def write(m: Manifest, changes: list[Change] | None = None) -> list[Path]:
    """Write the files whose text changed (atomic: temp file + rename). Returns the paths written. The temp files a
    killed earlier write left beside any of them are removed (`fsutil.remove_stale_tmp`)."""
    written = []
    for change in plan(m) if changes is None else changes:
        remove_stale_tmp(change.path)
        if change.changed:
            atomic_write(change.path, change.new)
            written.append(change.path)
    return written


def _read(out_dir: Path, relpath: str) -> str | None:
    """The text on disk of a generated file, or None when missing. No symbolic link on the way from `out_dir` is
    followed (a linked `policy-bundle/` or `nginx.conf` is refused: exit 1), and only a regular file is read."""
    path = out_dir
    parts = relpath.split("/")
    try:
        for index, part in enumerate(parts):
            path = path / part
            refuse_symlink(path, "generated file" if index == len(parts) - 1 else "folder")
        raw = read_bounded(path, MAX_GENERATED_BYTES, what="generated file")
    except FileNotFoundError:
        return None
    except Refused as exc:
        raise OperationFailed(str(exc), hint="swiftdeploy writes only its own regular files in the project") from None
    return raw.decode("utf-8", errors="replace")
