"""audit_report.md from history.jsonl and its rotated files, oldest first (docs/history.md).

The history is streamed once; only bounded aggregates are kept, so memory does not grow with its length:
counters, the last TIMELINE_MAX lifecycle/decision rows, the last LIST_MAX mode changes and chaos episodes,
one row per (domain, rule, source) violation, the last WINDOWS_MAX promotion windows, and CHART_POINTS chart
buckets whose width doubles (adjacent buckets merged) whenever the history outgrows them.

The charts are plain text in fenced blocks: Mermaid's xychart can draw neither a gap (a missing value) nor a
legend, and a gap is exactly what must show when a track did not answer.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import history
from .format import format_number
from .fsutil import atomic_write

TIMELINE_MAX = 200
LIST_MAX = 100
WINDOWS_MAX = 20
CHART_POINTS = 60  # time buckets; the chart is CHART_COLUMNS wide (a bucket may take several columns)
CHART_COLUMNS = 60
CHART_ROWS = 10
MAX_TIME_LABELS = 12
_GLYPHS = {"stable": "o", "canary": "x"}
_BOTH = "*"
TRACKS = ("stable", "canary")
_SERIES = tuple((t, (("p99_ms", f"{t}_p99"), ("error_rate_percent", f"{t}_err"))) for t in TRACKS)
_NUMBERS = (int, float)
_MAX_FIGURE = 1e12  # a P99 (ms) or an error rate (%) beyond this is not a measurement: left out of the charts
_UP_STATES = ("up", "starting")  # a track that answered (its figures are real)
# Events that end every chaos episode on a track: the process that carried the fault is gone or replaced.
_CHAOS_ENDERS = {"rollback": ("canary",), "teardown": TRACKS}


@dataclass
class ChaosEpisode:
    track: str
    fault: str  # "slow 1.5s" / "error 50%"
    started: str
    started_dt: datetime
    ended: str | None = None
    ended_by: str | None = None
    seconds: float | None = None


@dataclass
class ViolationRow:
    domain: str
    rule: str
    source: str  # "gate" (a policy_decision record) or "status" (seen by the dashboard)
    count: int = 0
    first: str = ""
    last: str = ""
    worst: Any = None
    threshold: Any = None
    unit: str = ""
    message: str = ""
    _distance: float = -1.0


ROLLOUTS_MAX = 20
ROLLOUT_ROWS_MAX = 60
_ROLLOUT_ENDS = {
    "rollout_succeeded": "succeeded",
    "rollout_blocked": "blocked",
    "rollout_paused": "paused",
    "rollout_aborted": "aborted",
    "rollout_failed": "failed",
    "rollout_interrupted": "interrupted",
}


@dataclass
class RolloutRun:
    """One `rollout` run: its steps on a timeline (step, weight, verdict, the evidence), and how it ended."""

    ts: str
    version: str
    image: str
    steps: list[int]
    resumed: bool
    rows: deque = field(default_factory=lambda: deque(maxlen=ROLLOUT_ROWS_MAX))
    outcome: str = "running (no end recorded)"

    def add(self, ts: str, record: dict[str, Any]) -> None:
        event = str(record["event"])
        reasons = [r for r in (record.get("violations") or []) + (record.get("basis") or []) if isinstance(r, dict)]
        evidence = "; ".join(str(r.get("message")) for r in reasons if r.get("message"))
        if event == "rollout_aborted":
            evidence = f"aborted by {record.get('by')} at {record.get('requested_at')}"
        elif event in ("rollout_rolled_back", "rollout_paused"):
            evidence = f"reason: {record.get('reason')}" + (f"; {evidence}" if evidence else "")
        elif event == "rollout_failed":
            evidence = str(record.get("error") or "")
        self.rows.append((ts, record.get("step"), record.get("weight"), event.removeprefix("rollout_"),
                          record.get("verdict") or "", evidence))  # fmt: skip
        if event in _ROLLOUT_ENDS:
            self.outcome = _ROLLOUT_ENDS[event]
            if record.get("step") is not None:
                self.outcome += f" at step {record.get('step')} ({record.get('weight')}%)"
            if event == "rollout_aborted":
                self.outcome += f" by {record.get('by')}"


@dataclass
class PromotionWindow:
    """One `promote stable` gate: what the policy was shown (the decision's input) and what it answered."""

    ts: str
    verdict: str
    engine: str | None
    window_seconds: Any
    tracks: dict[str, dict[str, Any] | None]  # stable/canary -> TRACK (requests, errors, error rate, P99) or None
    violations: list[dict[str, Any]]
    evidence: dict[str, Any] | None = None  # the canary gate's evidence (counts, confidence bounds), when recorded
    basis: list[dict[str, Any]] = field(default_factory=list)  # what an allow rested on


def _max_into(target: dict[str, float], values: dict[str, float]) -> None:
    for series, value in values.items():
        if series not in target or value > target[series]:
            target[series] = value


class _Chart:
    """Bounded time series by time: at most `points` buckets of `width` seconds from `origin`; when a record
    falls beyond the last bucket, the width doubles and adjacent buckets merge. A record's figures cover a span
    (the time since the previous record) and fill every bucket of it; each bucket keeps the max per series, so a
    spike stays visible. A bucket no record covered for a series is a gap, never a zero."""

    def __init__(self, points: int = CHART_POINTS) -> None:
        self.points = points
        self.start: float | None = None  # POSIX time of the origin
        self.width = 1.0  # seconds per bucket
        self.buckets: dict[int, dict[str, float]] = {}  # index -> series -> max

    @property
    def origin(self) -> datetime | None:
        return None if self.start is None else datetime.fromtimestamp(self.start, UTC)

    def add(self, start: float, end: float, values: dict[str, float]) -> None:
        """`values` held over [start, end] (POSIX seconds; a point when they are equal)."""
        if self.start is None:
            self.start = start
        first = max(0.0, start - self.start)
        last = max(first, end - self.start)
        while last / self.width >= self.points:
            self.width *= 2
            merged: dict[int, dict[str, float]] = {}
            for index in sorted(self.buckets):
                _max_into(merged.setdefault(index // 2, {}), self.buckets[index])
            self.buckets = merged
        low = int(first / self.width)
        high = max(low, math.ceil(last / self.width) - 1)  # [start, end): a span ending on a boundary stops there
        for index in range(low, high + 1):
            _max_into(self.buckets.setdefault(index, {}), values)

    @property
    def size(self) -> int:
        """Buckets from the origin to the last one with data (the empty ones in between are gaps)."""
        return max(self.buckets) + 1 if self.buckets else 0

    def series(self) -> set[str]:
        return {name for bucket in self.buckets.values() for name in bucket}


@dataclass
class AuditReport:
    source: str
    files: list[str] = field(default_factory=list)  # the history files read, oldest first
    since: str | None = None
    records: int = 0
    skipped: int = 0
    filtered: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    first_dt: datetime | None = None
    last_dt: datetime | None = None
    events: Counter = field(default_factory=Counter)
    verdicts: Counter = field(default_factory=Counter)  # gate decisions by verdict
    engines: Counter = field(default_factory=Counter)  # gate decisions by engine
    status_engines: Counter = field(default_factory=Counter)  # dashboard evaluations by engine
    promotions: Counter = field(default_factory=Counter)  # promote_succeeded by target
    timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_MAX))
    timeline_total: int = 0
    mode_changes: deque = field(default_factory=lambda: deque(maxlen=LIST_MAX))
    mode_changes_total: int = 0
    chaos: deque = field(default_factory=lambda: deque(maxlen=LIST_MAX))
    chaos_total: int = 0
    open_chaos: dict[str, ChaosEpisode] = field(default_factory=dict)
    violations: dict[tuple[str, str, str], ViolationRow] = field(default_factory=dict)
    chart: _Chart = field(default_factory=_Chart)
    windows: deque = field(default_factory=lambda: deque(maxlen=WINDOWS_MAX))
    windows_total: int = 0
    rollouts: deque = field(default_factory=lambda: deque(maxlen=ROLLOUTS_MAX))  # RolloutRun, last ones
    rollouts_total: int = 0
    hooks_failed: int = 0  # hook_run records with ok false

    # --- streaming ---

    def feed(self, record: dict[str, Any], moment: datetime | None = None) -> None:
        ts, event = record["ts"], record["event"]
        if moment is None:
            moment = history.parse_ts(ts)
        self.records += 1
        self.events[event] += 1
        if self.first_dt is None or moment < self.first_dt:
            self.first_dt, self.first_ts = moment, ts
        if self.last_dt is None or moment >= self.last_dt:
            self.last_dt, self.last_ts = moment, ts
        if event == "status":
            self._status(record, ts, moment)
            return
        self.timeline_total += 1
        self.timeline.append((ts, event, describe_record(record)))
        if ("mode_to" in record or "mode_from" in record) and record.get("mode_from") != record.get("mode_to"):
            self.mode_changes_total += 1
            self.mode_changes.append(
                (ts, event, record.get("mode_from"), record.get("mode_to"), record.get("image"), record.get("version"))
            )
        if event == "policy_decision":
            self.verdicts[str(record.get("verdict"))] += 1
            if record.get("engine"):
                self.engines[str(record["engine"])] += 1
            for v in record.get("violations") or []:
                self._violation(str(record.get("domain")), "gate", v, ts)
            self._window(record, ts)
        elif event == "promote_succeeded":
            self.promotions[str(record.get("target", "?"))] += 1
            if record.get("target") == "stable":
                self._end_chaos("canary", ts, moment, "promote stable (canary removed)")
        elif event == "chaos":
            self._chaos(record, ts, moment)
        elif event.startswith("rollout_"):
            self._rollout(record, ts)
        elif event == "hook_run" and record.get("ok") is not True:
            self.hooks_failed += 1
        elif event in _CHAOS_ENDERS:
            for track in _CHAOS_ENDERS[event]:
                self._end_chaos(track, ts, moment, event)

    def _status(self, record: dict[str, Any], ts: str, moment: datetime) -> None:
        # The hot path (most records are status records): plain type checks, precomputed series names.
        tracks = record.get("tracks")
        if type(tracks) is not dict:
            tracks = {}
        spans: dict[float, dict[str, float]] = {}  # both tracks usually cover the same span: one add
        for track, series in _SERIES:
            info = tracks.get(track)
            if type(info) is not dict:
                continue
            figures = info.get("interval")
            answered = info.get("state", "up" if info.get("up", True) else "down") in _UP_STATES
            if answered and type(figures) is dict:
                values: dict[str, float] = {}
                for key, name in series:
                    value = figures.get(key)
                    if type(value) in _NUMBERS and 0 <= value <= _MAX_FIGURE:
                        values[name] = float(value)
                seconds = figures.get("seconds")
                span = float(seconds) if type(seconds) in _NUMBERS and 0 < seconds < 366 * 86400 else 0.0
                if values:  # the figures cover the `seconds` up to the record's time
                    spans.setdefault(span, {}).update(values)
            if track in self.open_chaos:
                chaos = info.get("chaos")
                if type(chaos) is dict and chaos.get("mode") == "none":
                    self._end_chaos(track, ts, moment, "status: no fault seen")
        if spans:
            end = moment.timestamp()
            for span, values in spans.items():
                self.chart.add(end - span, end, values)
        decisions = record.get("decisions") if isinstance(record.get("decisions"), dict) else {}
        for domain, decision in decisions.items():
            if not isinstance(decision, dict):
                continue
            if decision.get("engine"):
                self.status_engines[str(decision["engine"])] += 1
            for v in decision.get("violations") or []:
                self._violation(str(domain), "status", v, ts)

    def _violation(self, domain: str, source: str, v: Any, ts: str) -> None:
        if not isinstance(v, dict):
            return
        rule = str(v.get("rule", "?"))
        row = self.violations.get((domain, rule, source))
        if row is None:
            row = self.violations[(domain, rule, source)] = ViolationRow(domain, rule, source, first=ts)
        row.count += 1
        row.last = ts
        row.message = str(v.get("message") or row.message)
        row.unit = str(v.get("unit") or row.unit or "")
        observed, threshold = v.get("observed"), v.get("threshold")
        distance = _distance(observed, threshold)
        if distance >= row._distance:  # keep the observation farthest beyond its threshold
            row._distance, row.worst, row.threshold = distance, observed, threshold

    def _window(self, record: dict[str, Any], ts: str) -> None:
        """A canary gate's decision (`promote stable`): keep what its window measured, for the evidence chart."""
        data = record.get("input")
        if record.get("domain") != "canary" or not isinstance(data, dict):
            return
        if record.get("gate") not in (None, "promote_stable", "rollout"):
            return
        self.windows_total += 1
        self.windows.append(
            PromotionWindow(
                ts=ts,
                verdict=str(record.get("verdict")),
                engine=record.get("engine"),
                window_seconds=data.get("window_seconds"),
                tracks={t: data.get(t) if isinstance(data.get(t), dict) else None for t in TRACKS},
                violations=[v for v in record.get("violations") or [] if isinstance(v, dict)],
                evidence=data.get("evidence") if isinstance(data.get("evidence"), dict) else None,
                basis=[b for b in record.get("basis") or [] if isinstance(b, dict)],
            )
        )

    def _rollout(self, record: dict[str, Any], ts: str) -> None:
        """A `rollout` record: a run starts at `rollout_started` (a resumed one too); every other record is a row."""
        event = record["event"]
        if event == "rollout_started" or not self.rollouts:
            self.rollouts_total += 1
            self.rollouts.append(RolloutRun(ts, str(record.get("version")), str(record.get("image")),
                                            [w for w in record.get("steps") or [] if isinstance(w, int)],
                                            bool(record.get("resumed"))))  # fmt: skip
        run = self.rollouts[-1]
        if event != "rollout_started":
            run.add(ts, record)

    def _chaos(self, record: dict[str, Any], ts: str, moment: datetime) -> None:
        track = str(record.get("track") or "canary")
        mode = str(record.get("mode") or "?")
        if mode in ("recover", "none"):
            self._end_chaos(track, ts, moment, "recover")
            return
        self._end_chaos(track, ts, moment, f"replaced by {mode}")
        if mode == "slow" and record.get("duration") is not None:
            fault = f"slow {format_number(record.get('duration'))}s"
        elif mode == "error" and isinstance(record.get("rate"), int | float):
            fault = f"error {format_number(record['rate'] * 100, '%')}"
        else:
            fault = mode
        episode = ChaosEpisode(track, fault, ts, moment)
        self.open_chaos[track] = episode
        self.chaos_total += 1
        self.chaos.append(episode)

    def _end_chaos(self, track: str, ts: str, moment: datetime, by: str) -> None:
        episode = self.open_chaos.pop(track, None)
        if episode is not None:
            episode.ended, episode.ended_by = ts, by
            episode.seconds = max(0.0, (moment - episode.started_dt).total_seconds())


def build(path: Path | str, since: datetime | None = None) -> AuditReport:
    """Stream the history at `path` (its rotated files first, oldest first) into an AuditReport (bounded memory
    whatever the history's length)."""
    reader = history.read(path, since=since)
    report = AuditReport(source=Path(path).name, since=history.format_ts(since) if since else None)
    for moment, record in reader.timed():
        try:
            report.feed(record, moment)
        except (TypeError, ValueError, AttributeError, OverflowError):
            reader.skipped += 1  # valid JSON with a field of the wrong shape: count it, do not fail the report
    report.skipped, report.filtered = reader.skipped, reader.filtered
    report.files = [p.name for p in reader.files]
    return report


def write(path: Path | str, out: Path | str, since: datetime | None = None, generated_at: str | None = None):
    """Build the report from `path` and write it atomically to `out`. Returns (out, report)."""
    report = build(path, since=since)
    atomic_write(Path(out), render_markdown(report, generated_at=generated_at or history.now_ts()))
    return Path(out), report


# --- Markdown ---


def cell(value: Any) -> str:
    """Text safe inside a GFM table cell: `|` escaped, newlines as <br>, no raw HTML."""
    if value is None:
        return ""
    text = format_number(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return text.replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>").strip()


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(report: AuditReport, generated_at: str | None = None) -> str:
    r = report
    out = ["# swiftdeploy audit report", ""]
    meta = f"From `{r.source}`"
    if len(r.files) > 1 or (r.files and r.files[0] != r.source):
        meta = "From " + ", ".join(f"`{name}`" for name in r.files) + " (oldest first)"
    if generated_at:
        meta += f", generated {generated_at}"
    if r.since:
        meta += f", records since {r.since} ({r.filtered} earlier records left out)"
    out += [meta + ".", ""]

    ev = r.events
    deploys = ev["deploy_started"]
    blocks = ev["deploy_blocked"] + ev["promote_blocked"]
    period = "no records"
    if r.first_ts and r.last_ts and r.first_dt and r.last_dt:
        period = f"{r.first_ts} → {r.last_ts} ({_duration((r.last_dt - r.first_dt).total_seconds())})"
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r.verdicts.items())) or "none"
    episodes_open = sum(1 for e in r.chaos if e.ended is None)
    summary = [
        ["Period", period],
        ["Records", f"{r.records} ({ev['status']} status records)"],
        [
            "Deploys",
            f"{deploys} started: {ev['deploy_succeeded']} succeeded, {ev['deploy_blocked']} blocked, "
            f"{ev['deploy_failed']} failed" + _interrupted(ev["deploy_interrupted"]),
        ],
        [
            "Promotions",
            f"{sum(r.promotions.values())} succeeded (to canary {r.promotions['canary']}, to stable "
            f"{r.promotions['stable']}), {ev['promote_blocked']} blocked, {ev['promote_failed']} failed"
            + _interrupted(ev["promote_interrupted"]),
        ],
        ["Blocks by policy", f"{blocks} ({ev['deploy_blocked']} deploy, {ev['promote_blocked']} promote)"],
        ["Policy decisions", f"{ev['policy_decision']} ({verdicts})"],
        ["Rollbacks", _with_failed(ev["rollback"], ev["rollback_failed"])],
        ["Teardowns", _with_failed(ev["teardown"], ev["teardown_failed"])],
        ["Chaos episodes", f"{r.chaos_total}" + (f" ({episodes_open} still active)" if episodes_open else "")],
        ["Policy engines", _engines(r)],
        ["Skipped lines", f"{r.skipped} (torn or invalid lines in the history file)"],
    ]
    summary += _undo_rows(r)
    out += ["## Summary", "", *_table(["Item", "Value"], summary), ""]

    out += _section(
        "Timeline",
        ["Time", "Event", "Details"],
        [list(row) for row in r.timeline],
        hidden=r.timeline_total - len(r.timeline),
        hidden_note=f"more earlier events not shown (the table keeps the last {TIMELINE_MAX})",
        empty="No lifecycle events or policy decisions recorded.",
        footer="_Status refreshes are summarised in the chart below, not listed._",
    )

    out += _section(
        "Mode changes",
        ["Time", "Event", "From", "To", "Image", "Version"],
        [list(change) for change in r.mode_changes],
        hidden=r.mode_changes_total - len(r.mode_changes),
        hidden_note=f"more earlier mode changes not shown (last {LIST_MAX} kept)",
        empty="No mode changes recorded.",
    )

    chaos_rows = [
        [
            e.track,
            e.fault,
            e.started,
            e.ended or "still active",
            _duration(e.seconds) if e.seconds is not None else "",
            e.ended_by or "",
        ]
        for e in r.chaos
    ]
    out += _section(
        "Chaos episodes",
        ["Track", "Fault", "Started", "Ended", "Duration", "Ended by"],
        chaos_rows,
        hidden=r.chaos_total - len(r.chaos),
        hidden_note=f"more earlier episodes not shown (last {LIST_MAX} kept)",
        empty="No chaos injected.",
    )

    out += _rollouts(r)

    out += ["## Policy violations", ""]
    if r.violations:
        rows = [
            [
                v.domain,
                v.rule,
                v.source,
                v.count,
                v.first,
                v.last,
                _with_unit(v.worst, v.unit),
                _with_unit(v.threshold, v.unit),
                v.message,
            ]  # fmt: skip
            for v in sorted(r.violations.values(), key=lambda v: (v.domain, v.source, v.rule))
        ]
        headers = ["Domain", "Rule", "Source", "Times", "First seen", "Last seen", "Worst observed", "Threshold"]
        out += _table([*headers, "Last message"], rows)
        out += [
            "",
            "_Source `gate`: a decision taken by deploy/promote; `status`: seen by the dashboard. "
            "Worst observed is the value farthest beyond its threshold._",
        ]
    else:
        out += ["_No policy violations recorded._"]
    out.append("")

    out += ["## Metrics over time", "", *_charts(r)]
    out += ["", "## Promotion windows", "", *_windows(r)] if out[-1] else ["## Promotion windows", "", *_windows(r)]
    return "\n".join(out).rstrip("\n") + "\n"


def _section(
    title: str,
    headers: list[str],
    rows: list[list[Any]],
    *,
    hidden: int,
    hidden_note: str,
    empty: str,
    footer: str | None = None,
) -> list[str]:
    """A `## title` section: the table (plus a note when older rows were dropped), or `empty` in italics."""
    out = [f"## {title}", ""]
    if not rows:
        return [*out, f"_{empty}_", ""]
    out += _table(headers, rows)
    if hidden:
        out += ["", f"_… {hidden} {hidden_note}._"]
    if footer:
        out += ["", footer]
    return [*out, ""]


def _rollouts(r: AuditReport) -> list[str]:
    """`## Rollouts`: per `rollout` run, its steps on a timeline (weight, verdict, the evidence at each step); no
    section when the history holds no rollout."""
    out = ["## Rollouts", ""]
    if not r.rollouts:
        return []
    if r.rollouts_total > len(r.rollouts):
        out += [f"_… {r.rollouts_total - len(r.rollouts)} earlier rollouts not shown (last {ROLLOUTS_MAX} kept)._", ""]
    for run in r.rollouts:
        steps = " → ".join(f"{w}%" for w in run.steps)
        resumed = ", resumed" if run.resumed else ""
        out += [f"### {run.ts}: {run.version} ({run.image}), steps {steps}{resumed}: {run.outcome}", ""]
        rows = [[ts, step, f"{weight}%" if weight is not None else "", event, verdict, evidence]
                for ts, step, weight, event, verdict, evidence in run.rows]  # fmt: skip
        out += [*_table(["Time", "Step", "Weight", "Event", "Verdict", "Evidence"], rows), ""]
    return out


def _charts(r: AuditReport) -> list[str]:
    chart = r.chart
    if not chart.buckets or chart.origin is None:
        return ["_No status refreshes recorded: run `swiftdeploy status` to collect metrics._"]
    present = chart.series()
    lines = [
        f"From the status records, placed by time: each point is the maximum over {_duration(chart.width)} "
        "(a record's figures fill the time since the previous record). A blank is a gap: the track did not "
        "answer, or no dashboard was recording. The promotion gates' own measurements are charted below.",
        "",
    ]
    for title, unit, suffix in (("P99 latency", "ms", "p99"), ("Error rate", "%", "err")):
        series = [t for t in TRACKS if f"{t}_{suffix}" in present]
        if series:
            lines += ["```text", *_text_chart(chart, title, unit, suffix, series), "```", ""]
    return lines


def _stretch(chart: _Chart) -> int:
    """Columns per bucket: a short history is drawn wide enough to read."""
    return max(1, CHART_COLUMNS // max(1, chart.size))


def _text_chart(chart: _Chart, title: str, unit: str, suffix: str, tracks: list[str]) -> list[str]:
    """One ASCII chart: y axis 0..a round top, one column per time slice, a glyph per track (`*` where both fall
    in the same cell), blank where there is no value, ≤ MAX_TIME_LABELS time labels, and a legend."""
    assert chart.origin is not None
    stretch = _stretch(chart)
    columns = chart.size * stretch
    top = _nice_top(max(b[f"{t}_{suffix}"] for b in chart.buckets.values() for t in tracks if f"{t}_{suffix}" in b))
    grid = [[" "] * columns for _ in range(CHART_ROWS + 1)]
    for index, bucket in chart.buckets.items():
        for track in tracks:
            value = bucket.get(f"{track}_{suffix}")
            if value is None:
                continue
            row = CHART_ROWS - min(CHART_ROWS, max(0, round(value / top * CHART_ROWS)))
            for col in range(index * stretch, (index + 1) * stretch):
                cell = grid[row][col]
                grid[row][col] = _GLYPHS[track] if cell in (" ", _GLYPHS[track]) else _BOTH
    labels = [
        format_number(top * (CHART_ROWS - row) / CHART_ROWS) if row % 2 == 0 else "" for row in range(CHART_ROWS + 1)
    ]
    pad = max(len(label) for label in labels)
    out = [f"{title} ({unit}), maximum per {_duration(chart.width)}"]
    out += [f"{label:>{pad}} |{''.join(cells).rstrip()}" for label, cells in zip(labels, grid, strict=True)]
    ticks = _time_ticks(chart.origin, chart.width / stretch, columns)
    axis = ["-"] * columns
    text = [" "] * (columns + 20)
    for col, label in ticks:
        axis[col] = "+"
        text[col : col + len(label)] = label
    out.append(f"{'':>{pad}} +{''.join(axis)}")
    out.append(f"{'':>{pad}}  {''.join(text).rstrip()}")
    span_end = chart.origin + timedelta(seconds=chart.size * chart.width)
    out.append(f"{'':>{pad}}  UTC, {history.format_ts(chart.origin)} to {history.format_ts(span_end)}")
    legend = []
    for track in tracks:
        peak = max(b[f"{track}_{suffix}"] for b in chart.buckets.values() if f"{track}_{suffix}" in b)
        legend.append(f"{_GLYPHS[track]} {track} (max {format_number(round(peak, 2), unit)})")
    if len(tracks) > 1:
        legend.append(f"{_BOTH} both")
    out.append("legend: " + "   ".join(legend) + "   blank: no data")
    return out


_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               172800, 604800, 2592000)  # fmt: skip


def _time_ticks(origin: datetime, seconds_per_column: float, columns: int) -> list[tuple[int, str]]:
    """(column, label) for round UTC times: the smallest step giving at most MAX_TIME_LABELS labels that do
    not touch each other."""
    span = seconds_per_column * columns
    for step in _TICK_STEPS:
        fmt = "%H:%M:%S" if step < 60 else ("%H:%M" if step < 86400 else "%m-%d")
        if step < 86400 and span >= 86400:
            fmt = "%m-%d %H:%M"
        width = len(origin.strftime(fmt)) + 2
        if step / seconds_per_column < width or span / step > MAX_TIME_LABELS:
            continue
        epoch = origin.timestamp()
        first = math.ceil(epoch / step) * step
        ticks = []
        moment = first
        while (col := math.floor((moment - epoch) / seconds_per_column + 1e-9)) < columns:
            ticks.append((col, datetime.fromtimestamp(moment, UTC).strftime(fmt)))
            moment += step
        if ticks:
            return ticks
    return [(0, origin.strftime("%H:%M:%S"))]


def _windows(r: AuditReport) -> list[str]:
    """Each `promote stable` gate's evidence: requests, error rate and P99 of both tracks over its window, as
    bars on one scale per measure, a `|` at a violated threshold, and the violations."""
    if not r.windows:
        return ["_No `promote stable` decisions recorded._"]
    out = [
        "What each `promote stable` gate measured over its window (the input of its policy decision), whatever a "
        "dashboard recorded. Bars share one scale per measure; `|` marks a threshold the canary broke.",
        "",
    ]
    hidden = r.windows_total - len(r.windows)
    if hidden:
        out += [f"_… {hidden} earlier promotion windows not shown (the last {WINDOWS_MAX} are kept)._", ""]
    for w in r.windows:
        out += ["```text", *_window_chart(w), "```", ""]
    return out


_WINDOW_BAR = 30
_MEASURES = (("requests", "requests", ""), ("error rate", "error_rate_percent", "%"), ("P99", "p99_ms", "ms"))


def _window_chart(w: PromotionWindow) -> list[str]:
    seconds = w.window_seconds
    span = f", {_duration(float(seconds))} window" if isinstance(seconds, int | float) and seconds > 0 else ""
    engine = f" ({w.engine} engine)" if w.engine else ""
    out = [f"{w.ts}  promote stable: {w.verdict}{engine}{span}"]
    canary = w.tracks.get("canary") or {}
    for label, key, unit in _MEASURES:
        values = {t: (w.tracks.get(t) or {}).get(key) for t in TRACKS}
        numbers = [float(v) for v in values.values() if isinstance(v, _NUMBERS) and not isinstance(v, bool)]
        limit = _limit(w, key, canary)
        top = max([*numbers, limit or 0.0, 0.0])
        for i, track in enumerate(TRACKS):
            value = values[track]
            name = f"{label:<11}{track:<7}" if i == 0 else f"{'':<11}{track:<7}"
            if not isinstance(value, _NUMBERS) or isinstance(value, bool):
                out.append(f"{name}{'':<{_WINDOW_BAR + 2}}no figures")
                continue
            bar = list("#" * (round(float(value) / top * _WINDOW_BAR) if top > 0 else 0))
            bar += [" "] * (_WINDOW_BAR + 1 - len(bar))
            if limit is not None and track == "canary":
                bar[min(_WINDOW_BAR, round(limit / top * _WINDOW_BAR))] = "|"
            shown = format_number(value, unit)
            if key == "requests" and isinstance((w.tracks.get(track) or {}).get("errors"), int):
                shown += f" ({w.tracks[track]['errors']} errors)"  # type: ignore[index]
            if limit is not None and track == "canary":
                shown += f"   | threshold {format_number(limit, unit)}"
            out.append(f"{name}{''.join(bar)} {shown}".rstrip())
    out += _evidence_lines(w.evidence)
    for v in w.violations:
        message = " ".join(str(v.get("message") or "").split())
        out.append(f"violation {v.get('rule')}: {message}".rstrip(": "))
    if not w.violations:
        out.append("no violations")
    for b in w.basis if w.verdict == "allow" else []:  # what the allow rested on
        out.append(f"allowed on {b.get('rule')}: {' '.join(str(b.get('message') or '').split())}".rstrip(": "))
    return [line.replace("`", "'") for line in out]


# An evidence-backed violation (the canary gate) names its rule; its observed value is a share of requests, not the
# TRACK figure the bar shows: the error-rate rule marks its threshold (a %) on the error-rate bar, the P99 rule the
# latency it counted at (ms) on the P99 bar.
_RULE_OF_MEASURE = {"error_rate_percent": "error_rate", "p99_ms": "p99_latency"}


def _limit(w: PromotionWindow, key: str, canary: dict[str, Any]) -> float | None:
    """Where the `|` of a violated threshold goes on the canary's bar of `key`, or None."""
    for v in w.violations:
        if v.get("bound_kind") is not None:
            if v.get("rule") != _RULE_OF_MEASURE.get(key):
                continue
            if key == "p99_ms":
                latency = ((w.evidence or {}).get("p99_latency") or {}).get("latency_ms")
                return float(latency) if isinstance(latency, _NUMBERS) and not isinstance(latency, bool) else None
            threshold = v.get("threshold")
            return float(threshold) if isinstance(threshold, _NUMBERS) and not isinstance(threshold, bool) else None
        if isinstance(v.get("threshold"), _NUMBERS) and v.get("observed") == canary.get(key) is not None:
            return float(v["threshold"])
    return None


def _evidence_lines(ev: dict[str, Any] | None) -> list[str]:
    """The counts and confidence bounds the canary gate judged (docs/policies.md#input), one line per part."""
    if not ev:
        return []
    echo = ev.get("thresholds") if isinstance(ev.get("thresholds"), dict) else {}
    deny, allow = echo.get("deny_confidence_percent"), echo.get("allow_confidence_percent")

    def bounds(part: dict[str, Any]) -> str:
        low, high = part.get("lower_percent"), part.get("upper_percent")
        text = f"above {format_number(low, '%')} at {format_number(deny, '%')}" if low is not None else ""
        if high is not None:
            text += ("; " if text else "") + f"below {format_number(high, '%')} at {format_number(allow, '%')}"
        return text

    def count(part: dict[str, Any]) -> str:
        low, high = part.get("count"), part.get("count_max")
        return format_number(low) if high in (None, low) else f"{format_number(low)} to {format_number(high)}"

    method = "a look of the watch" if ev.get("method") == "sequential" else "one window"
    out = [f"evidence ({method}):"]
    errors = ev.get("error_rate")
    if isinstance(errors, dict):
        out.append(
            f"  errors    {count(errors)} of {format_number(errors.get('requests'))} canary requests "
            f"({format_number(errors.get('observed_percent'), '%')}): {bounds(errors)}"
        )
    slow = ev.get("p99_latency")
    if isinstance(slow, dict):
        out.append(
            f"  slow      {count(slow)} of {format_number(slow.get('requests'))} slower than "
            f"{format_number(slow.get('latency_ms'), 'ms')} ({format_number(slow.get('observed_percent'), '%')}): "
            f"{bounds(slow)}"
        )
    ratio = ev.get("error_rate_vs_stable")
    if isinstance(ratio, dict):
        observed = ratio.get("observed_ratio")
        shown = f"{format_number(observed)}x, " if observed is not None else ""
        out.append(
            f"  vs stable errors {format_number(ratio.get('canary_errors'))} of "
            f"{format_number(ratio.get('canary_requests'))} against {format_number(ratio.get('stable_errors'))} of "
            f"{format_number(ratio.get('stable_requests'))}: {shown}at least "
            f"{format_number(ratio.get('lower_ratio'))}x at {format_number(echo.get('ratio_confidence_percent'), '%')}"
        )
    relative = ev.get("p99_vs_stable")
    if isinstance(relative, dict):
        out.append(
            f"  vs stable P99 {count(relative)} of {format_number(relative.get('requests'))} slower than "
            f"{format_number(relative.get('latency_ms'), 'ms')} (stable P99 "
            f"{format_number(relative.get('stable_p99_ms'), 'ms')}): {bounds(relative)}"
        )
    more = ev.get("requests_needed")
    if isinstance(more, int) and not isinstance(more, bool) and more > 0:
        out.append(f"  about {more} more canary requests would have settled it")
    return out


# --- formatting helpers ---


def _with_failed(succeeded: int, failed: int) -> str:
    """Attempts (a success event or a `*_failed` one each), with the failures."""
    total = succeeded + failed
    return f"{total} ({failed} failed)" if failed else str(total)


def _engines(r: AuditReport) -> str:
    names = sorted(set(r.engines) | set(r.status_engines))
    if not names:
        return "none recorded"
    return ", ".join(
        f"{name} ({r.engines[name]} gate decisions, {r.status_engines[name]} status evaluations)" for name in names
    )


def _undo_rows(r: AuditReport) -> list[list[str]]:
    """Summary rows for `undo` and hooks (docs/operations.md, "undo", "Hooks"), only when the history has any:
    older reports read the same."""
    rows, ev = [], r.events
    if ev["undo_started"]:
        undos = _with_failed(ev["undo_succeeded"], ev["undo_failed"]) + _interrupted(ev["undo_interrupted"])
        rows.append(["Undos", f"{undos} ({ev['release_recorded']} replaced stable versions recorded by promotions)"])
    if ev["hook_run"]:
        rows.append(["Hook runs", f"{ev['hook_run']} ({r.hooks_failed} failed)"])
    return rows


def _interrupted(count: int) -> str:
    """ ", 1 interrupted" (Ctrl-C closed the start), nothing when none was: older reports read the same."""
    return f", {count} interrupted" if count else ""


def describe_record(record: dict[str, Any]) -> str:
    """One readable line for the timeline (and `swiftdeploy history`): the known fields first, then other scalars,
    truncated."""
    event = record["event"]
    parts: list[str] = []
    if event == "policy_decision":
        n = len(record.get("violations") or [])
        parts.append(f"{record.get('domain')}: {record.get('verdict')} via {record.get('engine')}")
        if n:
            rules = ", ".join(str(v.get("rule")) for v in record["violations"][:5] if isinstance(v, dict))
            parts.append(f"{n} violation{'s' if n != 1 else ''} ({rules})")
    elif event == "chaos":
        parts.append(f"{record.get('track', 'canary')}: {record.get('mode')}")
    skip = {"ts", "event", "input", "violations", "domain", "verdict", "engine", "allow"}
    if event == "chaos":
        skip |= {"track", "mode"}
    for key, value in record.items():
        if key in skip or isinstance(value, dict | list) or value is None:
            continue
        parts.append(f"{key}={format_number(value) if isinstance(value, float) else value}")
    text = "; ".join(parts)
    return text if len(text) <= 240 else text[:239] + "…"


def _distance(observed: Any, threshold: Any) -> float:
    if isinstance(observed, int | float) and isinstance(threshold, int | float):
        value = abs(float(observed) - float(threshold))
        return value if math.isfinite(value) else 0.0
    return 0.0


def _with_unit(value: Any, unit: str) -> str:
    """A violation's observed value or threshold, formatted as every other view shows it (format_number)."""
    return "" if value is None else format_number(value, unit)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{format_number(round(seconds, 1))} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def _nice_top(value: float) -> float:
    """A round y-axis maximum at or above the data whose fifths (the labelled rows) are round too: 5 × 1, 2,
    2.5, 4, 5, 6 or 8 × 10^k (never 0: the axis needs a range)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value / 5))
    for step in (1, 2, 2.5, 4, 5, 6, 8, 10):
        if 5 * step * magnitude >= value:
            return float(5 * step * magnitude)
    return float(50 * magnitude)
