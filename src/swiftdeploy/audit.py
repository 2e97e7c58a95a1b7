"""audit_report.md from history.jsonl (DESIGN §9, docs/history.md).

The history is streamed once; only bounded aggregates are kept, so memory does not grow with its length:
counters, the last TIMELINE_MAX lifecycle/decision rows, the last LIST_MAX mode changes and chaos episodes,
one row per (domain, rule, source) violation, and CHART_POINTS chart buckets whose width doubles (adjacent
buckets merged) whenever the history outgrows them.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import history
from .fsutil import atomic_write

TIMELINE_MAX = 200
LIST_MAX = 100
CHART_POINTS = 60
TRACKS = ("stable", "canary")
_SERIES = tuple((t, (("p99_ms", f"{t}_p99"), ("error_rate_percent", f"{t}_err"))) for t in TRACKS)
_NUMBERS = (int, float)
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


@dataclass
class _Bucket:
    first_ts: str
    values: dict[str, float] = field(default_factory=dict)  # series -> max in the bucket

    def add(self, series: str, value: float) -> None:
        if series not in self.values or value > self.values[series]:
            self.values[series] = value

    def merge(self, other: _Bucket) -> None:
        for k, v in other.values.items():
            self.add(k, v)


class _Chart:
    """Bounded time series: at most CHART_POINTS buckets; when a point falls beyond the last bucket, the width
    doubles and adjacent buckets merge (max per series). Each bucket keeps the max, so a spike stays visible."""

    SERIES = ("stable_p99", "canary_p99", "stable_err", "canary_err")

    def __init__(self, points: int = CHART_POINTS) -> None:
        self.points = points
        self.origin: datetime | None = None
        self.width = 1.0  # seconds per bucket
        self.buckets: dict[int, _Bucket] = {}

    def add(self, moment: datetime, ts: str, values: dict[str, float]) -> None:
        if self.origin is None:
            self.origin = moment
        offset = max(0.0, (moment - self.origin).total_seconds())
        while offset / self.width >= self.points:
            self.width *= 2
            merged: dict[int, _Bucket] = {}
            for index in sorted(self.buckets):
                bucket = self.buckets[index]
                target = merged.get(index // 2)
                if target is None:
                    merged[index // 2] = bucket
                else:
                    target.merge(bucket)
            self.buckets = merged
        index = int(offset / self.width)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = _Bucket(ts)
        for series, value in values.items():
            bucket.add(series, value)

    def ordered(self) -> list[_Bucket]:
        return [self.buckets[i] for i in sorted(self.buckets)]


@dataclass
class AuditReport:
    source: str
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
    failed: Counter = field(default_factory=Counter)  # rollback/teardown records with failed=true
    timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_MAX))
    timeline_total: int = 0
    mode_changes: deque = field(default_factory=lambda: deque(maxlen=LIST_MAX))
    mode_changes_total: int = 0
    chaos: deque = field(default_factory=lambda: deque(maxlen=LIST_MAX))
    chaos_total: int = 0
    open_chaos: dict[str, ChaosEpisode] = field(default_factory=dict)
    violations: dict[tuple[str, str, str], ViolationRow] = field(default_factory=dict)
    chart: _Chart = field(default_factory=_Chart)

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
        self.timeline.append((ts, event, _details(record)))
        if record.get("failed") is True:
            self.failed[event] += 1
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
        elif event == "promote_succeeded":
            self.promotions[str(record.get("target", "?"))] += 1
            if record.get("target") == "stable":
                self._end_chaos("canary", ts, moment, "promote stable (canary removed)")
        elif event == "chaos":
            self._chaos(record, ts, moment)
        elif event in _CHAOS_ENDERS:
            for track in _CHAOS_ENDERS[event]:
                self._end_chaos(track, ts, moment, event)

    def _status(self, record: dict[str, Any], ts: str, moment: datetime) -> None:
        # The hot path (most records are status records): plain type checks, precomputed series names.
        tracks = record.get("tracks")
        if type(tracks) is not dict:
            tracks = {}
        values: dict[str, float] = {}
        for track, series in _SERIES:
            info = tracks.get(track)
            if type(info) is not dict:
                continue
            figures = info.get("interval") or info.get("window")
            if type(figures) is dict:
                for key, name in series:
                    value = figures.get(key)
                    if type(value) in _NUMBERS and math.isfinite(value):
                        values[name] = float(value)
            if track in self.open_chaos:
                chaos = info.get("chaos")
                if type(chaos) is dict and chaos.get("mode") == "none":
                    self._end_chaos(track, ts, moment, "status: no fault seen")
        if values:
            self.chart.add(moment, ts, values)
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

    def _chaos(self, record: dict[str, Any], ts: str, moment: datetime) -> None:
        track = str(record.get("track") or "canary")
        mode = str(record.get("mode") or "?")
        if mode in ("recover", "none"):
            self._end_chaos(track, ts, moment, "recover")
            return
        self._end_chaos(track, ts, moment, f"replaced by {mode}")
        if mode == "slow" and record.get("duration") is not None:
            fault = f"slow {_num(record.get('duration'))}s"
        elif mode == "error" and isinstance(record.get("rate"), int | float):
            fault = f"error {_num(record['rate'] * 100)}%"
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
    """Stream the history at `path` into an AuditReport (bounded memory whatever the file's length)."""
    reader = history.read(path, since=since)
    report = AuditReport(source=Path(path).name, since=history.format_ts(since) if since else None)
    for moment, record in reader.timed():
        try:
            report.feed(record, moment)
        except (TypeError, ValueError, AttributeError):
            reader.skipped += 1  # valid JSON with a field of the wrong shape: count it, do not fail the report
    report.skipped, report.filtered = reader.skipped, reader.filtered
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
    text = _num(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
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
        ["Records", f"{r.records} ({ev['status']} status refreshes)"],
        [
            "Deploys",
            f"{deploys} started: {ev['deploy_succeeded']} succeeded, {ev['deploy_blocked']} blocked, "
            f"{ev['deploy_failed']} failed",
        ],
        [
            "Promotions",
            f"{sum(r.promotions.values())} succeeded (to canary {r.promotions['canary']}, to stable "
            f"{r.promotions['stable']}), {ev['promote_blocked']} blocked, {ev['promote_failed']} failed",
        ],
        ["Blocks by policy", f"{blocks} ({ev['deploy_blocked']} deploy, {ev['promote_blocked']} promote)"],
        ["Policy decisions", f"{ev['policy_decision']} ({verdicts})"],
        ["Rollbacks", _with_failed(ev["rollback"], r.failed["rollback"])],
        ["Teardowns", _with_failed(ev["teardown"], r.failed["teardown"])],
        ["Chaos episodes", f"{r.chaos_total}" + (f" ({episodes_open} still active)" if episodes_open else "")],
        ["Policy engines", _engines(r)],
        ["Skipped lines", f"{r.skipped} (torn or invalid lines in the history file)"],
    ]
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


def _charts(r: AuditReport) -> list[str]:
    buckets = r.chart.ordered()
    if not buckets:
        return ["_No status refreshes recorded: run `swiftdeploy status` to collect metrics._"]
    span_days = r.last_dt and r.first_dt and (r.last_dt - r.first_dt).total_seconds() >= 86400
    labels = [_label(b.first_ts, bool(span_days)) for b in buckets]
    present = {s for b in buckets for s in b.values}
    lines = [
        f"{len(buckets)} points, each the maximum over {_duration(r.chart.width)} of status refreshes. "
        "Blue: stable, orange: canary; 0 where the track did not answer.",
        "",
    ]
    for title, unit, suffix in (("P99 latency", "ms", "p99"), ("Error rate", "%", "err")):
        series = [s for s in (f"stable_{suffix}", f"canary_{suffix}") if s in present]
        if not series:
            continue
        top = max((b.values.get(s, 0.0) for b in buckets for s in series), default=0.0)
        lines += [
            "```mermaid",
            "---",
            "config:",
            "  themeVariables:",
            "    xyChart:",
            '      plotColorPalette: "#1f77b4, #ff7f0e"',
            "---",
            "xychart-beta",
            f'    title "{title} ({unit})"',
            "    x-axis [" + ", ".join(f'"{label}"' for label in labels) + "]",
            f'    y-axis "{unit}" 0 --> {_nice_top(top)}',
        ]
        if f"stable_{suffix}" not in series:
            lines.append("    line [" + ", ".join("0" for _ in buckets) + "]")  # keep canary orange
        for s in series:
            lines.append("    line [" + ", ".join(_num(round(b.values.get(s, 0.0), 2)) for b in buckets) + "]")
        lines += ["```", ""]
    return lines


# --- formatting helpers ---


def _with_failed(total: int, failed: int) -> str:
    return f"{total} ({failed} failed)" if failed else str(total)


def _engines(r: AuditReport) -> str:
    names = sorted(set(r.engines) | set(r.status_engines))
    if not names:
        return "none recorded"
    return ", ".join(
        f"{name} ({r.engines[name]} gate decisions, {r.status_engines[name]} status evaluations)" for name in names
    )


def _details(record: dict[str, Any]) -> str:
    """One readable line for the timeline: the known fields first, then other scalars, truncated."""
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
        parts.append(f"{key}={_num(value) if isinstance(value, float) else value}")
    text = "; ".join(parts)
    return text if len(text) <= 240 else text[:239] + "…"


def _distance(observed: Any, threshold: Any) -> float:
    if isinstance(observed, int | float) and isinstance(threshold, int | float):
        value = abs(float(observed) - float(threshold))
        return value if math.isfinite(value) else 0.0
    return 0.0


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "0"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _with_unit(value: Any, unit: str) -> str:
    """A violation's observed value or threshold, formatted as every other view shows it (format_number)."""
    from .format import format_number

    return "" if value is None else format_number(value, unit)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{_num(round(seconds, 1))} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def _label(ts: str, with_date: bool) -> str:
    # "2024-05-01T12:00:01.123Z" -> "12:00:01" (or "05-01 12:00" when the history spans days)
    date, _, clock = ts.partition("T")
    return f"{date[5:]} {clock[:5]}" if with_date else clock[:8]


def _nice_top(value: float) -> str:
    """A round y-axis maximum a little above the data (never 0: mermaid needs a range)."""
    if value <= 0:
        return "1"
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * magnitude
        if top >= value * 1.05:
            return _num(float(top))
    return _num(float(10 * magnitude))
