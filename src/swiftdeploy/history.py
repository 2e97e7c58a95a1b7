"""history.jsonl: the append-only memory of a deployment (DESIGN §9, docs/history.md).

One JSON object per line, each with `ts` (UTC RFC 3339, milliseconds, "Z") and `event`.

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
- Readers stream line by line (memory does not grow with the file), skip and count invalid lines
  (torn, not JSON, not an object, missing `ts`/`event`), and read a missing file as empty.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import InvalidInput, OperationFailed

# Event names (a contract: INTERFACES.md; fields per event in docs/history.md).
LIFECYCLE_EVENTS = (
    "init",
    "deploy_started",
    "deploy_blocked",
    "deploy_succeeded",
    "deploy_failed",
    "promote_started",
    "promote_blocked",
    "promote_succeeded",
    "promote_failed",
    "rollback",
    "teardown",
    "chaos",
)
EVENTS = (*LIFECYCLE_EVENTS, "policy_decision", "status")


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


def append(path: Path | str, event: str, /, *, fsync: bool = False, **fields: Any) -> dict[str, Any]:
    """Append one record {"ts", "event", **fields} to the history file and return it.

    Creates the parent folder. `fsync=True` also forces the line to disk before returning (see module doc).
    Raises OperationFailed (exit 1) when the file cannot be written.
    """
    if "ts" in fields:
        raise TypeError("append() sets `ts` itself; do not pass it")
    record: dict[str, Any] = {"ts": now_ts(), "event": event, **fields}
    line = encode(record)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_RDWR only so pread can check the last byte; O_APPEND puts every write at the end, atomically.
        # os.write hands the bytes straight to the kernel: there is no user-space buffer left to flush.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OperationFailed(
            f"{path}: cannot open the history file: {exc.strerror or exc}",
            hint="check that its folder is writable (it is the manifest's output folder)",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line from a crash: do not glue this record to it
            _write_all(fd, line)
            if fsync:
                os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        raise OperationFailed(
            f"{path}: cannot append to the history file: {exc.strerror or exc}",
            hint="check free disk space and permissions",
        ) from None
    finally:
        os.close(fd)
    return record


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def record_decision(path: Path | str, decision: Any, /, **extra: Any) -> dict[str, Any]:
    """Append a `policy_decision` record: domain, engine, verdict, allow, violations, input (+ `extra` context,
    e.g. `gate="promote_stable"`). `decision` is a swiftdeploy.policy.Decision (anything with `.to_dict()`) or
    a dict of the same shape."""
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
    return append(path, "policy_decision", **fields, **extra)


class HistoryReader:
    """Iterate the valid records of a history file, oldest first, streaming.

    After (or during) an iteration: `.lines` lines seen, `.skipped` invalid lines, `.filtered` valid records
    dropped by `since`/`until`. Each new iteration reopens the file and resets the counters.
    """

    def __init__(self, path: Path | str, since: datetime | None = None, until: datetime | None = None) -> None:
        self.path = Path(path)
        self.since = since
        self.until = until
        self.lines = 0
        self.skipped = 0
        self.filtered = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _moment, record in self.timed():
            yield record

    def timed(self) -> Iterator[tuple[datetime, dict[str, Any]]]:
        """Like iterating, but yields (ts parsed as an aware UTC datetime, record): the reader parses `ts`
        anyway to validate it, so consumers that need the time do not parse it twice."""
        self.lines = self.skipped = self.filtered = 0
        since, until = self.since, self.until
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by the with below, after the existence check
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OperationFailed(f"{self.path}: cannot read the history file: {exc.strerror or exc}") from None
        with handle:
            for raw in handle:  # buffered, one line at a time
                self.lines += 1
                decoded = _decode(raw)
                if decoded is None:
                    if raw.strip():
                        self.skipped += 1
                    else:
                        self.lines -= 1  # blank lines (e.g. the "\n" before a record after a torn one) are noise
                    continue
                moment = decoded[0]
                if (since is not None and moment < since) or (until is not None and moment > until):
                    self.filtered += 1
                    continue
                yield decoded


def _decode(raw: bytes) -> tuple[datetime, dict[str, Any]] | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if type(record) is not dict:
        return None
    ts, event = record.get("ts"), record.get("event")
    if type(ts) is not str or type(event) is not str or not event:
        return None
    try:
        return parse_ts(ts), record
    except ValueError:
        return None


def read(path: Path | str, since: datetime | None = None, until: datetime | None = None) -> HistoryReader:
    """The records of `path` (a missing file reads as empty). See HistoryReader for the counters."""
    return HistoryReader(path, since=since, until=until)
