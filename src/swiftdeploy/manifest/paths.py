"""The project-path rule (docs/manifest.md#limits): every folder swiftdeploy writes to or reads policies from is
inside the manifest's folder, and no symbolic link there is followed.

`check_paths(m)` runs on every `load_manifest`, so every command - `validate` and `init --dry-run` included -
refuses before it plans or writes anything:
- `output_dir` and `policy.dir`, with every link resolved, must be inside the manifest's folder (exit 2, the
  manifest's fault; `output_dir` naming a file is exit 2 as well);
- the state folder `.swiftdeploy`, the `policy-bundle/` folder and `history.jsonl` must not be symbolic links
  (exit 1: something in the project is not swiftdeploy's own; remove the link).
The writers keep their own belts: generated files are replaced by rename (a link at the destination is replaced,
its target never written) and history.jsonl is opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ManifestError, OperationFailed
from ..fsutil import Refused, refuse_symlink

if TYPE_CHECKING:
    from .model import Manifest

BUNDLE_DIR = "policy-bundle"  # the same name as policy.bundle.BUNDLE_DIR (not imported: it loads the engines)


def check_paths(m: Manifest) -> None:
    """Raise ManifestError (exit 2) or OperationFailed (exit 1) when `m`'s paths break the project-path rule."""
    base = _resolved(m.base_dir, "manifest folder")
    source = m.source_path.name if m.source_path else "manifest.yaml"
    if m.output_dir:
        _inside(m.out_dir, base, f"{source}: output_dir {m.output_dir!r}")
        if m.out_dir.exists() and not m.out_dir.is_dir():
            raise ManifestError(
                f"{source}: output_dir {m.output_dir!r} names a file ({m.out_dir}), not a folder",
                hint="point output_dir at a folder (it is created when missing), or remove the file",
            )
    if m.policy.dir:
        _inside(base / m.policy.dir, base, f"{source}: policy.dir {m.policy.dir!r}")
    try:
        refuse_symlink(m.state_dir, "state folder")
        refuse_symlink(m.out_dir / BUNDLE_DIR, "policy bundle folder")
        refuse_symlink(m.history_path, "history file")
    except Refused as exc:
        raise OperationFailed(str(exc)) from None
    if m.state_dir.exists() and not m.state_dir.is_dir():
        raise OperationFailed(
            f"{m.state_dir}: the state folder is a file, not a folder", hint="move the file away and retry"
        )
    _no_link_in(m.state_dir)


STATE_DEPTH = 3  # .swiftdeploy/<folder>/<file>: what swiftdeploy itself makes there
STATE_ENTRIES = 2000


def _no_link_in(folder: Path) -> None:
    """Refuse a symbolic link anywhere in the state folder (a planted `logs/app.log` or `pids` link would be
    written through); a bounded walk: what swiftdeploy makes there is a few files, STATE_DEPTH deep."""
    budget = STATE_ENTRIES
    pending = [(folder, 0)] if folder.is_dir() else []
    while pending and budget > 0:
        current, depth = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue  # unreadable: the command that needs it says so
        for entry in entries[:budget]:
            budget -= 1
            if entry.is_symlink():
                raise OperationFailed(
                    f"{entry.path}: a symbolic link in the state folder; swiftdeploy follows no link in the project",
                    hint="remove the link (swiftdeploy makes every file in .swiftdeploy itself)",
                )
            if depth + 1 < STATE_DEPTH and entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), depth + 1))


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        raise ManifestError(f"{path}: cannot resolve the {what}: {exc}") from None


def _inside(path: Path, base: Path, what: str) -> None:
    resolved = _resolved(path, "path")
    if not resolved.is_relative_to(base):
        raise ManifestError(
            f"{what} resolves to {resolved}, outside the manifest's folder {base}",
            hint="swiftdeploy reads and writes only inside the manifest's folder: use a folder there (no link out)",
        )
