"""The release record `swiftdeploy undo` reads: the stable versions each `promote stable` replaced
(docs/operations.md#undo---to-version---timeout-s).

`<state folder>/releases.json` holds the last KEEP replaced stables, oldest first:

    {"format": 1, "releases": [{"image": ..., "version": ..., "command": [...] | null, "replaced_at": ts,
      "replaced_by_image": ..., "replaced_by_version": ...}]}

(`replaced_at` is the `ts` of the promotion's `release_recorded` history record: the two can be matched up.)

Written atomically (fsutil.atomic_write) by operations holding the deploy lock; read with a size bound, never through
a symlink, and validated: a file that is not exactly this (edited by hand, truncated, another program's) is
OperationFailed (exit 1) naming the file and the fix, never a traceback and never a guess.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OperationFailed

if TYPE_CHECKING:
    from .manifest import Manifest

FILE = "releases.json"
FORMAT = 1
KEEP = 10  # replaced stables kept; the oldest is dropped first
MAX_BYTES = 256 * 1024  # ten records are a few KiB: anything this large was not written by swiftdeploy
MAX_ARGV = 64  # a recorded command: at most this many arguments ...
MAX_ARG_CHARS = 4096  # ... of at most this many characters each


@dataclass(frozen=True)
class Release:
    """One stable version a promotion replaced: what `undo` brings back."""

    image: str
    version: str
    command: list[str] | None
    replaced_at: str  # when the promotion replaced it: the `ts` of its `release_recorded` history record
    replaced_by_image: str
    replaced_by_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.version} ({self.image}), replaced by {self.replaced_by_version} at {self.replaced_at}"


def path_of(m: Manifest) -> Path:
    return m.state_dir / FILE


def _damaged(path: Path, what: str) -> OperationFailed:
    return OperationFailed(
        f"{path} is not a valid release record: {what}",
        hint="restore it, or delete it to forget the earlier versions (history.jsonl still lists each one as a "
        "`release_recorded` record); `swiftdeploy undo` needs it to know what ran before",
    )


def read(path: Path) -> list[Release]:
    """The recorded releases, oldest first ([] when the file does not exist). OperationFailed when it is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if path.is_symlink():
            raise _damaged(path, "it is a symbolic link (swiftdeploy writes a plain file)") from None
        raise OperationFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise _damaged(path, "it is not a regular file")
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise _damaged(path, f"it is larger than {MAX_BYTES // 1024} KiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, f"not JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"format", "releases"}:
        raise _damaged(path, 'expected an object with exactly "format" and "releases"')
    if data["format"] != FORMAT:
        raise _damaged(path, f"format {data['format']!r}, this swiftdeploy reads format {FORMAT}")
    entries = data["releases"]
    if not isinstance(entries, list) or len(entries) > KEEP:
        raise _damaged(path, f'"releases" must be a list of at most {KEEP} records')
    return [_release(path, i, entry) for i, entry in enumerate(entries)]


def _release(path: Path, index: int, entry: Any) -> Release:
    from pydantic import TypeAdapter, ValidationError

    from .history import parse_ts
    from .manifest.types import ImageRef, SafeText, Version

    where = f"releases[{index}]"
    fields = {f for f in Release.__dataclass_fields__}
    if not isinstance(entry, dict) or set(entry) != fields:
        raise _damaged(path, f"{where} must be an object with exactly {', '.join(sorted(fields))}")
    checks: dict[str, Any] = {
        "image": ImageRef,
        "version": Version,
        "replaced_by_image": ImageRef,
        "replaced_by_version": Version,
        "command": list[SafeText] | None,
    }
    for name, kind in checks.items():
        try:
            TypeAdapter(kind).validate_python(entry[name], strict=True)
        except ValidationError as exc:
            raise _damaged(path, f"{where}.{name}: {exc.errors()[0]['msg']}") from None
    command = entry["command"]
    if command is not None and (
        not 1 <= len(command) <= MAX_ARGV or any(not 0 < len(arg) <= MAX_ARG_CHARS for arg in command)
    ):
        raise _damaged(path, f"{where}.command must have 1-{MAX_ARGV} non-empty arguments")
    for name in ("replaced_at",):
        try:
            if not isinstance(entry[name], str):
                raise ValueError("not a string")
            parse_ts(entry[name])
        except ValueError as exc:
            raise _damaged(path, f"{where}.{name} is not an RFC 3339 time ({exc})") from None
    return Release(**entry)


def write(path: Path, releases: list[Release]) -> None:
    """Replace the record with `releases` (the last KEEP of them), atomically."""
    from .fsutil import atomic_write

    kept = releases[-KEEP:]
    text = json.dumps({"format": FORMAT, "releases": [r.to_dict() for r in kept]}, indent=2) + "\n"
    atomic_write(path, text, mode=0o644)
