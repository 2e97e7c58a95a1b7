"""history.jsonl: the append-only memory of a deployment (docs/contracts.md#history-records, docs/history.md).

One JSON object per line, each with `ts` (UTC RFC 3339, milliseconds, "Z") and `event` (one of EVENTS).
`now_ts()` is swiftdeploy's one clock for written times (history records, the lock's holder info, pid files).

Guarantees (and their limits):
- Writers never interleave: every append takes `flock(LOCK_EX)` on the file and writes the whole line with
  `os.write` on an O_APPEND descriptor (looping only on a short write, still under the lock). Any process that
  uses this module is serialised; an editor appending by hand is not.
- A crash (kill -9, power loss after the kernel accepted the write) loses at most the line being written: lines
  are complete before the next one starts, and a writer that finds a torn last line (no trailing "\\n") starts
  its record on a fresh line so it is not glued to the garbage.
- The line is in the kernel's page cache when `append` returns (visible to every reader at once, survives the
  process dying). It is on disk only with `fsync=True` (costs a disk flush per record); without it, a power loss
  or kernel crash can drop the last few seconds of records — never corrupt earlier ones beyond a torn last line.
- Readers stream line by line (memory does not grow with the file, nor with a line: a line longer than MAX_LINE
  is skipped without being held), skip and count invalid lines (torn, not UTF-8, not JSON within safejson's
  bounds, not an object, missing `ts`/`event`, a `ts` out of range), and read a missing file as empty. Every
  consumer (audit, `history`) reads through `read`/HistoryReader.
- Rotation (docs/history.md#rotation): an append that would take the file past `Rotation.max_bytes` first renames
  it to `history.1.jsonl` (shifting `.1` to `.2` ... and deleting the one past `Rotation.keep`), under the same
  lock, so no record is written to a file being rotated away; a writer that waited for the lock on a file that
  was renamed meanwhile reopens the new one. Every step is one rename: a crash mid-rotation leaves the files in
  oldest-to-newest order with at most one number missing, and the next rotation carries on. Readers read the
  rotated files first, oldest first (`files()`), then the current one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import safejson
from .errors import InvalidInput, OperationFailed

MB = 1024**2  # `history.max_mb` counts MiB, like the host facts' GB (policy.facts.GB)
DEFAULT_MAX_MB = 50
DEFAULT_KEEP = 4
DEFAULT_STATUS_EVERY = 60.0  # seconds: an unchanged dashboard records a status snapshot at most this often

# The event vocabulary: every record's `event` is one of these (docs/history.md lists exactly these, with their
# fields; a test compares the two; the contract: docs/contracts.md#history-records). `append` refuses any other
# name: a new event is added here and documented there.
# Failures are always `<operation>_failed`, policy refusals `<operation>_blocked`, Ctrl-C `<operation>_interrupted`.
EVENTS = (
    "init",
    "deploy_started",
    "deploy_blocked",
    "deploy_succeeded",
    "deploy_failed",
    "deploy_interrupted",
    "promote_started",
    "promote_blocked",
    "promote_succeeded",
    "promote_failed",
    "promote_interrupted",
    "rollback",
    "rollback_failed",
    "teardown",
    "teardown_failed",
    "chaos",
    # progressive delivery: `rollout` (its steps and verdicts), `abort`, and `promote stable` stopped by an abort
    "rollout_started",
    "rollout_step",
    "rollout_verdict",
    "rollout_paused",
    "rollout_rolled_back",
    "rollout_aborted",
    "rollout_blocked",
    "rollout_succeeded",
    "rollout_failed",
    "rollout_interrupted",
    "promote_aborted",
    "policy_decision",
    "status",
    # undo (ops/undo.py): the stable a promotion replaced, and bringing it back
    "release_recorded",
    "undo_started",
    "undo_succeeded",
    "undo_failed",
    "undo_interrupted",
    # hooks (swiftdeploy/hooks.py): every run of a manifest hook
    "hook_run",
)
_KNOWN = frozenset(EVENTS)
# Plugins record their own events as `plugin.<plugin name>.<event>` (e.g. `plugin.hello.facts_read`): a namespace
# the registry does not list, so a plugin never needs swiftdeploy changed and never takes a built-in name.
PLUGIN_PREFIX = "plugin."
_PLUGIN_EVENT = re.compile(r"plugin\.[a-z0-9][a-z0-9_-]{0,62}\.[a-z][a-z0-9_]{0,62}")


def check_event(event: str) -> str:
    """`event` when it is a registered event or a well-formed plugin event; ValueError (a programming error, not
    bad input) otherwise."""
    if event in _KNOWN or _PLUGIN_EVENT.fullmatch(event):
        return event
    raise ValueError(
        f"unknown history event {event!r}: register it in swiftdeploy.history.EVENTS and docs/history.md, "
        f"or (a plugin) name it {PLUGIN_PREFIX}<plugin name>.<event> in lowercase"
    )


def now_ts() -> str:
    """Current time as UTC RFC 3339 with milliseconds and a "Z" (the `ts` of every record)."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> datetime:
    """RFC 3339 (with "Z" or an offset) -> aware datetime in UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(UTC)


_RELATIVE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since` value: an RFC 3339 time (`2024-05-01T12:00:00Z`), a date (`2024-05-01`, UTC midnight) or a
    span back from now (`90s`, `30m`, `2h`, `7d`). Raises InvalidInput (exit 2)."""
    match = _RELATIVE.fullmatch(text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * _UNIT[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidInput(
            f"--since {text!r} is not a time",
            hint="use RFC 3339 (2024-05-01T12:00:00Z), a date (2024-05-01) or a span back from now (30m, 2h, 7d)",
        )
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON (jq and browsers refuse them): write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode(record: dict[str, Any]) -> bytes:
    """One record -> one line of UTF-8 JSON ending in "\\n" (json.dumps never emits a raw newline)."""
    try:
        text = json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(record), ensure_ascii=False, default=str, allow_nan=False)
    return (text + "\n").encode("utf-8")


@dataclass(frozen=True)
class Rotation:
    """When the history file is rotated: before an append would take it past `max_bytes`, it becomes
    `history.1.jsonl` and at most `keep` rotated files are kept (the manifest's `history.max_mb` and
    `history.keep`: `Manifest.history.rotation`)."""

    max_bytes: int = DEFAULT_MAX_MB * MB
    keep: int = DEFAULT_KEEP

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.keep < 1:
            raise ValueError(f"Rotation needs max_bytes >= 1 and keep >= 1, got {self.max_bytes}, {self.keep}")


DEFAULT_ROTATION = Rotation()
_OPEN_ATTEMPTS = 1000  # reopen after a rotation by another writer; only a pathological storm gets near this


def append(
    path: Path | str,
    event: str,
    /,
    *,
    fsync: bool = False,
    rotation: Rotation | None = None,
    at: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Append one record {"ts", "event", **fields} to the history file and return it.

    `event` must be in EVENTS or a plugin event (`plugin.<name>.<event>`): ValueError otherwise (check_event).
    Creates the parent folder. `fsync=True` also forces the line to disk before returning (see module doc).
    `rotation` says when to rotate the file first (default: DEFAULT_ROTATION; writers holding a manifest pass
    `m.history.rotation`). `ts` is now, or `at` for a record of an observation made a moment ago (a status
    snapshot written after the refresh that saw it). Raises OperationFailed (exit 1) when the file cannot be
    written.
    """
    check_event(event)
    if "ts" in fields:
        raise TypeError("append() sets `ts` itself; do not pass it (use at= for an earlier moment)")
    record: dict[str, Any] = {"ts": format_ts(at) if at is not None else now_ts(), "event": event, **fields}
    line = encode(record)
    path = Path(path)
    rotation = rotation or DEFAULT_ROTATION
    for _attempt in range(_OPEN_ATTEMPTS):
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if not _is_current(fd, path):
                    continue  # rotated away while this writer waited for the lock: append to the new file
                size = os.fstat(fd).st_size
                if size and size + len(line) > rotation.max_bytes:
                    _rotate(path, rotation.keep)  # still under the lock of the file being renamed
                    continue
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn last line from a crash: do not glue this record to it
                _write_all(fd, line)
                if fsync:
                    os.fsync(fd)
                return record
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise OperationFailed(
                f"{path}: cannot append to the history file: {exc.strerror or exc}",
                hint="check free disk space and permissions",
            ) from None
        finally:
            os.close(fd)
    raise OperationFailed(f"{path}: the history file kept being rotated by other writers; record not written")


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_RDWR only so pread can check the last byte; O_APPEND puts every write at the end, atomically.
        # os.write hands the bytes straight to the kernel: there is no user-space buffer left to flush.
        # O_NOFOLLOW: a history.jsonl that is a symbolic link is refused (ELOOP), never appended through.
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OperationFailed(
                f"{path}: the history file is a symbolic link; swiftdeploy follows no link in the project",
                hint="remove the link (history.jsonl is a regular file swiftdeploy creates)",
            ) from None
        raise OperationFailed(
            f"{path}: cannot open the history file: {exc.strerror or exc}",
            hint="check that its folder is writable (it is the manifest's output folder)",
        ) from None


def _is_current(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (not renamed away by a rotation)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def rotated_path(path: Path | str, number: int) -> Path:
    """`history.jsonl`, 2 -> `history.2.jsonl` (the same folder)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{number}{path.suffix}")


def _rotated_numbers(path: Path) -> list[int]:
    """The numbers of the rotated files of `path` that exist, ascending (newest first)."""
    pattern = re.compile(re.escape(path.stem) + r"\.([1-9][0-9]{0,5})" + re.escape(path.suffix))
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OperationFailed(f"{path.parent}: cannot list the history files: {exc.strerror or exc}") from None
    return sorted(int(match[1]) for name in names if (match := pattern.fullmatch(name)))


def _rotate(path: Path, keep: int) -> None:
    """history.jsonl -> history.1.jsonl, .1 -> .2, ... (the caller holds the current file's lock). One rename
    per step, oldest first, so the files are in order after every step: a crash leaves at most a gap."""
    numbers = _rotated_numbers(path)
    for number in reversed(numbers):
        if number >= keep:  # the oldest kept one would move past `keep`; files left by a larger `keep` too
            os.unlink(rotated_path(path, number))
    for number in reversed([n for n in numbers if n < keep]):
        os.rename(rotated_path(path, number), rotated_path(path, number + 1))
    os.rename(path, rotated_path(path, 1))
    with contextlib.suppress(OSError):  # make the renames durable (best effort: not every filesystem can)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def files(path: Path | str) -> list[Path]:
    """The files of the history at `path` that exist, oldest first: `history.<n>.jsonl` ... `history.1.jsonl`,
    then `history.jsonl` itself. What `read` reads, in that order."""
    path = Path(path)
    out = [rotated_path(path, n) for n in reversed(_rotated_numbers(path))]
    if path.exists():
        out.append(path)
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def record_decision(
    path: Path | str, decision: Any, /, *, rotation: Rotation | None = None, **extra: Any
) -> dict[str, Any]:
    """Append a `policy_decision` record: domain, engine, verdict, allow, violations, input (+ `extra` context,
    e.g. `gate="promote_stable"`). `decision` is a swiftdeploy.policy.Decision (anything with `.to_dict()`) or
    a dict of the same shape. `rotation`: as for `append`."""
    data = decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
    fields = {
        "domain": data.get("domain"),
        "engine": data.get("engine"),
        "verdict": data.get("verdict"),
        "allow": data.get("allow"),
        "violations": data.get("violations") or [],
        "input": data.get("input"),
    }
    if data.get("basis"):  # what an allow rests on (the canary gate)
        fields["basis"] = data["basis"]
    return append(path, "policy_decision", rotation=rotation, **fields, **extra)


class HistoryReader:
    """Iterate the valid records of a history, oldest first, streaming: the rotated files oldest first
    (`history.<n>.jsonl` ... `history.1.jsonl`), then the current file (see `files`).

    The files are opened together before the first record is read, while holding a shared lock on the current
    file, so a rotation at that moment cannot make the reader skip or repeat a file; records appended after
    that are read while the current file is being read, until it is rotated away.

    After (or during) an iteration: `.lines` lines seen, `.skipped` invalid lines, `.filtered` valid records
    dropped by `since`/`until`, `.files` the files read. Each new iteration reopens the files and resets the
    counters. `rotated=False` reads only `path` itself.
    """

    def __init__(
        self,
        path: Path | str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        rotated: bool = True,
    ) -> None:
        self.path = Path(path)
        self.since = since
        self.until = until
        self.rotated = rotated
        self.lines = 0
        self.skipped = 0
        self.filtered = 0
        self.files: list[Path] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _moment, record in self.timed():
            yield record

    def timed(self) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """Like iterating, but yields (ts parsed as an aware UTC datetime, record): the reader parses `ts`
        anyway to validate it, so consumers that need the time do not parse it twice."""
        self.lines = self.skipped = self.filtered = 0
        since, until = self.since, self.until
        opened = self._open()
        self.files = [p for p, _ in opened]
        try:
            for _path, handle in opened:
                for raw in _lines(handle):  # buffered, one line at a time, at most MAX_LINE bytes held
                    self.lines += 1
                    decoded = None if raw is None else _decode(raw)
                    if decoded is None:
                        if raw is None or raw.strip():
                            self.skipped += 1
                        else:
                            self.lines -= 1  # blank lines (the "\n" before a record after a torn one) are noise
                        continue
                    moment = decoded[0]
                    if (since is not None and moment < since) or (until is not None and moment > until):
                        self.filtered += 1
                        continue
                    yield decoded
                handle.close()  # done with it: a long history holds one open file at a time after this
        finally:
            for _path, handle in opened:
                handle.close()

    def _open(self) -> list[tuple[Path, Any]]:
        """(path, open binary handle) of every file to read, oldest first. A missing file is no file."""
        for _attempt in range(_OPEN_ATTEMPTS):
            current = self._open_file(self.path)
            if current is None or not self.rotated:
                older = [] if not self.rotated else self._open_rotated()
                return older + ([(self.path, current)] if current is not None else [])
            try:
                fcntl.flock(current.fileno(), fcntl.LOCK_SH)  # no rotation while the set is opened
                if not _is_current(current.fileno(), self.path):
                    current.close()
                    continue  # rotated between open and lock: open the new one
                older = self._open_rotated()
            except BaseException:
                current.close()
                raise
            finally:
                if not current.closed:
                    fcntl.flock(current.fileno(), fcntl.LOCK_UN)
            return [*older, (self.path, current)]
        raise OperationFailed(f"{self.path}: the history file kept being rotated; try again")

    def _open_rotated(self) -> list[tuple[Path, Any]]:
        out = []
        try:
            for number in reversed(_rotated_numbers(self.path)):
                path = rotated_path(self.path, number)
                handle = self._open_file(path)
                if handle is not None:
                    out.append((path, handle))
        except BaseException:
            for _path, handle in out:
                handle.close()
            raise
        return out

    @staticmethod
    def _open_file(path: Path) -> Any:
        try:
            return open(path, "rb")  # noqa: SIM115 - closed by timed()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OperationFailed(f"{path}: cannot read the history file: {exc.strerror or exc}") from None


MAX_LINE = 1 << 20  # the longest line a reader parses: a record is a few kB; a longer line is skipped unread
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)  # a margin below datetime.max for the readers' arithmetic


def _lines(handle: Any, limit: int = MAX_LINE) -> Iterator[bytes | None]:
    """The lines of a binary file, each at most `limit` bytes (+ its "\n"); None for a longer line, whose rest
    is read and dropped in bounded chunks (memory stays O(limit) whatever the line's length)."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := handle.readline(limit)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        yield line


def _decode(raw: bytes) -> tuple[datetime, dict[str, Any]] | None:
    """(ts, record) of one line, or None when it is not a valid record: not UTF-8, not JSON within
    swiftdeploy.safejson's bounds (nesting, finite numbers, no lone surrogate), not an object, or without a
    string `event` and a `ts` that is an RFC 3339 time between 1970 and 9999."""
    try:
        record = safejson.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if type(record) is not dict:
        return None
    ts, event = record.get("ts"), record.get("event")
    if type(ts) is not str or type(event) is not str or not event or len(ts) > 64:
        return None
    try:
        moment = parse_ts(ts)
    except (ValueError, OverflowError):  # year 1 at +14:00 overflows in the conversion to UTC
        return None
    if not _EARLIEST <= moment < _LATEST:
        return None
    return moment, record


def read(
    path: Path | str, since: datetime | None = None, until: datetime | None = None, *, rotated: bool = True
) -> HistoryReader:
    """The records of the history at `path`, oldest first: its rotated files, then `path` (missing files read
    as empty). See HistoryReader for the counters and `rotated`."""
    return HistoryReader(path, since=since, until=until, rotated=rotated)
