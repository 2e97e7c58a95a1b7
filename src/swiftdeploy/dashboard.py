"""What `swiftdeploy status` sees: per-track figures and both policy verdicts, as a Snapshot (library, no printing).

A `StatusCollector` keeps what one refresh needs from the previous ones, all bounded:
- the previous scrape of each track (figures over the last interval: "collecting baseline" until there is one);
- the scrapes of the last policy window (figures over the window: the oldest scrape not older than the window);
- the last TREND_POINTS interval values of req/s and P99 (sparklines).

Each refresh scrapes every track (metrics, healthz, chaos) through the admin listener, or through the per-track
base URLs given to the collector (tests point them straight at demo API processes). A track that does not answer
is "down" (or "absent" when the manifest runs no canary); nothing here raises for a dead track or a failing
policy engine: the snapshot says so instead.

`render(snapshot)` builds the Rich renderable; Rich is imported inside it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import history
from .errors import PolicyEngineUnavailable, SwiftDeployError

if TYPE_CHECKING:
    from .manifest import Manifest
    from .metrics import Scrape

TRACKS = ("stable", "canary")
DOMAINS = ("infrastructure", "canary")
TREND_POINTS = 40
SPARK = "▁▂▃▄▅▆▇█"
_CHAOS_CODES = {0: "none", 1: "slow", 2: "error"}  # the chaos_active gauge (DESIGN §8)

# Verdicts a domain can show. Only "allow" lets `status --once` exit 0 (see exit_code()).
BASELINE = "collecting baseline"
NOT_APPLICABLE = "not applicable"
UNAVAILABLE = "engine unavailable"
ERROR = "error"


@dataclass
class TrackView:
    track: str
    state: str  # "up" | "down" | "absent" (no canary in this mode)
    error: str | None = None  # why it is down
    health: str | None = None  # "ok" or what /healthz answered
    mode: str | None = None
    version: str | None = None
    uptime_seconds: float | None = None
    chaos: dict[str, Any] | None = None  # GET /chaos: mode, duration, rate, since
    interval: dict[str, Any] | None = None  # figures since the previous refresh
    window: dict[str, Any] | None = None  # figures over the policy window (or as much of it as observed)
    trend_rps: list[float] = field(default_factory=list)
    trend_p99: list[float] = field(default_factory=list)

    def to_dict(self, trends: bool = True) -> dict[str, Any]:
        out = {
            "state": self.state,
            "up": self.state == "up",
            "error": self.error,
            "health": self.health,
            "mode": self.mode,
            "version": self.version,
            "uptime_seconds": self.uptime_seconds,
            "chaos": self.chaos,
            "interval": self.interval,
            "window": self.window,
        }
        if trends:
            out["trend"] = {"rps": self.trend_rps, "p99_ms": self.trend_p99}
        return out


@dataclass
class DomainView:
    domain: str
    verdict: str  # allow | deny | inconclusive | collecting baseline | not applicable | engine unavailable | error
    engine: str | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None  # why it was not evaluated, or the engine's error
    input: dict[str, Any] | None = None

    @property
    def allow(self) -> bool:
        return self.verdict == "allow"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "allow": self.allow,
            "engine": self.engine,
            "violations": self.violations,
            "message": self.message,
            "input": self.input,
        }


@dataclass
class Snapshot:
    ts: str
    project: str
    mode: str  # the manifest's services.mode
    interval_seconds: float | None  # time since the previous refresh (None: first refresh)
    window_seconds: float  # the policy window the window figures aim at
    tracks: dict[str, TrackView]
    decisions: dict[str, DomainView]
    host: dict[str, Any] | None = None  # infrastructure facts (DESIGN §7)

    @property
    def baseline(self) -> bool:
        return self.interval_seconds is None

    @property
    def engines(self) -> list[str]:
        return sorted({d.engine for d in self.decisions.values() if d.engine})

    def exit_code(self) -> int:
        """`status --once`: 0 when every evaluated domain allows and every track that should run answers, 3 when
        a domain denies / is inconclusive / has not enough data, 4 when the engine could not answer (and nothing
        denied), 1 when a track that should run is down (so a probe or CI step sees an outage even while the
        policy allows). `not applicable` (no canary in stable mode) does not block."""
        verdicts = [d.verdict for d in self.decisions.values() if d.verdict != NOT_APPLICABLE]
        if any(v not in ("allow", UNAVAILABLE) for v in verdicts):
            return 3
        if UNAVAILABLE in verdicts:
            return 4
        if any(view.state == "down" for view in self.tracks.values()):
            return 1
        return 0

    def to_dict(self, trends: bool = True) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "project": self.project,
            "mode": self.mode,
            "baseline": self.baseline,
            "interval_seconds": self.interval_seconds,
            "window_seconds": self.window_seconds,
            "engines": self.engines,
            "tracks": {name: view.to_dict(trends) for name, view in self.tracks.items()},
            "decisions": {name: view.to_dict() for name, view in self.decisions.items()},
            "host": self.host,
        }

    def record(self) -> dict[str, Any]:
        """The fields of this snapshot's `status` history record (no ts: history.append stamps it; no trends:
        they are the previous records)."""
        data = self.to_dict(trends=False)
        del data["ts"]
        for decision in data["decisions"].values():
            decision.pop("input", None)  # the figures are in `tracks` and `host` already
        return data


def track_urls(m: Manifest) -> dict[str, str]:
    """Per-track base URLs through the admin listener: {"stable": "http://127.0.0.1:8081/stable", ...}."""
    from .metrics import admin_url

    return {track: admin_url(m, track, "metrics").rsplit("/", 1)[0] for track in TRACKS}


class StatusCollector:
    """Builds one Snapshot per `collect()`; keeps the bounded state rates and windows need (see module doc)."""

    def __init__(
        self,
        m: Manifest,
        *,
        urls: dict[str, str] | None = None,
        timeout: float = 2.0,
        window_seconds: float | None = None,
        evaluate: Callable[[Manifest, str, dict[str, Any]], Any] | None = None,
        host_facts: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.m = m
        self.urls = dict(urls) if urls is not None else track_urls(m)
        self.timeout = timeout
        self.window_seconds = float(window_seconds if window_seconds is not None else m.policy.window_seconds)
        self._evaluate = evaluate
        self._host_facts = host_facts
        self._clock = clock
        self._previous: dict[str, Scrape] = {}
        self._window: dict[str, deque[Scrape]] = {t: deque(maxlen=10_000) for t in TRACKS}
        self._trend_rps: dict[str, deque[float]] = {t: deque(maxlen=TREND_POINTS) for t in TRACKS}
        self._trend_p99: dict[str, deque[float]] = {t: deque(maxlen=TREND_POINTS) for t in TRACKS}
        self._last_at: float | None = None

    # --- one refresh ---

    def collect(self) -> Snapshot:
        now = self._clock()
        tracks = [t for t in TRACKS if t in self.urls]
        with ThreadPoolExecutor(max_workers=len(tracks) or 1) as pool:  # a hung track must not delay the other
            views = dict(zip(tracks, pool.map(self._track, tracks), strict=True))
        interval = None if self._last_at is None else round(now - self._last_at, 3)
        self._last_at = now
        host, infra = self._infrastructure()
        decisions = {"infrastructure": infra, "canary": self._canary(views, interval)}
        return Snapshot(
            ts=history.now_ts(),
            project=self.m.project_name,
            mode=self.m.services.mode,
            interval_seconds=interval,
            window_seconds=self.window_seconds,
            tracks=views,
            decisions=decisions,
            host=host,
        )

    def _track(self, track: str) -> TrackView:
        from .metrics import scrape, window

        base = self.urls[track].rstrip("/")
        try:
            current = scrape(f"{base}/metrics", timeout=self.timeout)
        except SwiftDeployError as exc:
            self._forget(track)
            state = "absent" if track == "canary" and self.m.services.mode != "canary" else "down"
            return TrackView(track, state, error=str(exc))
        view = TrackView(track, "up")
        self._health(view, base, current)
        previous = self._previous.get(track)
        if previous is not None:
            view.interval = _figures(window(previous, current))
        self._previous[track] = current
        # policy window: drop scrapes older than the window, measure from the oldest one left
        kept = self._window[track]
        kept.append(current)
        while len(kept) > 1 and current.at - kept[0].at > self.window_seconds:
            kept.popleft()
        if len(kept) > 1:
            view.window = _figures(window(kept[0], current), track_input=True)
        if view.interval is not None:
            self._trend_rps[track].append(view.interval["rps"])
            self._trend_p99[track].append(view.interval["p99_ms"] or 0.0)
        view.trend_rps = list(self._trend_rps[track])
        view.trend_p99 = list(self._trend_p99[track])
        return view

    def _forget(self, track: str) -> None:
        """A down track restarts from scratch: a restarted process's counters are a new series."""
        self._previous.pop(track, None)
        self._window[track].clear()

    def _health(self, view: TrackView, base: str, current: Scrape) -> None:
        """/healthz and GET /chaos (not counted in the figures: metrics.window leaves them out). When they do not
        answer, the gauges of the scrape still give uptime, mode and the chaos mode."""
        import httpx

        gauges = current.gauges
        view.uptime_seconds = gauges.get("app_uptime_seconds")
        if "app_mode" in gauges:
            view.mode = "canary" if gauges["app_mode"] == 1 else "stable"
        if "chaos_active" in gauges:
            view.chaos = {"mode": _CHAOS_CODES.get(int(gauges["chaos_active"]), "unknown")}

        try:
            with httpx.Client(timeout=self.timeout, trust_env=False) as client:
                health = client.get(f"{base}/healthz")
                body = _json(health)
                view.health = "ok" if health.status_code == 200 else f"HTTP {health.status_code}"
                view.mode, view.version = body.get("mode", view.mode), body.get("version")
                uptime = body.get("uptime_seconds")
                if isinstance(uptime, int | float):
                    view.uptime_seconds = float(uptime)
                chaos = client.get(f"{base}/chaos")
                if chaos.status_code == 200 and _json(chaos).get("mode"):
                    view.chaos = _json(chaos)
        except httpx.HTTPError as exc:
            view.health = f"unreachable: {type(exc).__name__}"

    # --- policy ---

    def _decide(self, domain: str, data: dict[str, Any]) -> DomainView:
        try:
            evaluate = self._evaluate
            if evaluate is None:
                from .policy import evaluate
            decision = evaluate(self.m, domain, data).to_dict()
        except PolicyEngineUnavailable as exc:
            return DomainView(domain, UNAVAILABLE, message=str(exc), input=data)
        except SwiftDeployError as exc:
            return DomainView(domain, ERROR, message=str(exc), input=data)
        return DomainView(
            domain,
            decision["verdict"],
            engine=decision.get("engine"),
            violations=list(decision.get("violations") or []),
            input=data,
        )

    def _infrastructure(self) -> tuple[dict[str, Any] | None, DomainView]:
        try:
            if self._host_facts is not None:
                facts = self._host_facts()
            else:
                from .policy.facts import host_facts

                facts = host_facts(self.m.base_dir)  # the filesystem the deploy gate checks too
        except SwiftDeployError as exc:
            return None, DomainView("infrastructure", ERROR, message=f"cannot gather host facts: {exc}")
        return facts, self._decide("infrastructure", facts)

    def _canary(self, views: dict[str, TrackView], interval: float | None) -> DomainView:
        canary = views.get("canary")
        if canary is None or canary.state == "absent":
            why = " (services.mode is stable)" if self.m.services.mode == "stable" else ""
            return DomainView("canary", NOT_APPLICABLE, message=f"no canary running{why}")
        if interval is None:
            return DomainView("canary", BASELINE, message="first refresh: no window yet")
        stable = views.get("stable")
        data = {
            "window_seconds": round((canary.window or {}).get("seconds") or 0.0, 3),
            # a down canary, or one just back up, has no window: the policy says the input is missing
            "canary": (canary.window or {}).get("input"),
            "stable": (stable.window or {}).get("input") if stable is not None else None,
        }
        return self._decide("canary", data)


def _figures(w: Any, track_input: bool = False) -> dict[str, Any]:
    """metrics.TrackWindow -> the dict shown, recorded and (with track_input) sent to the policy."""
    seconds = float(w.seconds) if w.seconds else 0.0
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "requests": w.requests,
        "errors": w.errors,
        "rps": round(w.requests / seconds, 3) if seconds > 0 else 0.0,
        "error_rate_percent": _round(w.error_rate_percent),
        "p50_ms": _round(w.p50_ms),
        "p99_ms": _round(w.p99_ms),
    }
    if track_input:
        out["input"] = w.to_input()
    return out


def _round(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, int | float) else None


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def sparkline(values: list[float]) -> str:
    """▁▂▃▅▇ scaled to the largest value (all blocks at the bottom when every value is 0)."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


# --- rendering (Rich, imported lazily) ---

_VERDICT_STYLE = {"allow": "bold green", "deny": "bold red", "inconclusive": "bold yellow"}


def render(snapshot: Snapshot) -> Any:
    """A Rich renderable of the snapshot: per track one line over the last interval and one over the policy
    window, with trends; then both policy verdicts with every violation."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = snapshot
    head = Text.assemble(
        ("swiftdeploy status ", "bold"),
        (s.project, "cyan"),
        f" · mode {s.mode} · engine {', '.join(s.engines) or '–'} · {s.ts}",
    )
    if s.baseline:
        head.append(" · collecting baseline…", style="yellow")

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("Track", "State", "Chaos", "Over", "Req", "req/s", "Err %", "P50 ms", "P99 ms", "Trend"):
        numeric = column in ("Req", "req/s", "Err %", "P50 ms", "P99 ms")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column in ("Trend", "State"))
    notes: list[Text] = []
    for view in s.tracks.values():
        for row in _track_rows(view, s, notes):
            table.add_row(*row)

    policy = Table.grid(padding=(0, 1))
    policy.add_column()
    policy.add_column()
    for d in s.decisions.values():
        style = _VERDICT_STYLE.get(d.verdict, "yellow" if d.verdict in (BASELINE, NOT_APPLICABLE) else "bold red")
        label = Text(d.verdict.upper() if d.verdict in _VERDICT_STYLE else d.verdict, style=style)
        where = f" ({d.engine})" if d.engine else ""
        policy.add_row(Text(f"{d.domain}{where}", style="bold"), label)
        if d.message:
            policy.add_row("", Text(d.message, style="dim"))
        for v in d.violations:
            policy.add_row("", Text(f"• {_violation_text(v)}", style="red"))
    return Group(head, table, *notes, Text("Policy", style="bold underline"), policy)


def _track_rows(view: TrackView, s: Snapshot, notes: list[Any]) -> list[list[Any]]:
    """Two table rows per running track (last interval, policy window); one for a down/absent track."""
    from rich.text import Text

    name = f"{view.track} {view.version or ''}".strip()
    if view.state != "up":
        style = "dim" if view.state == "absent" else "bold red"
        why = "not running" if view.state == "absent" else (view.error or "no answer")
        notes.append(Text(f"{view.track}: {why}", style=style))
        return [[name, Text(view.state.upper(), style=style), "", "", "", "", "", "", "", ""]]
    healthy = view.health == "ok"
    state = Text(f"up {_uptime(view.uptime_seconds)}" if healthy else f"up, {view.health}", style="green")
    if not healthy:
        state.stylize("yellow")
    if view.mode and view.mode != view.track:
        state.append(f" ({view.mode})", style="yellow")  # a track answering as the other mode is worth seeing
    mode = (view.chaos or {}).get("mode", "?")
    chaos = mode
    if mode == "slow":
        chaos = f"slow {_fmt((view.chaos or {}).get('duration'))}s"
    elif mode == "error":
        chaos = f"error {_fmt(((view.chaos or {}).get('rate') or 0) * 100)}%"
    chaos_text = Text(chaos, style="green" if mode == "none" else "bold red")

    def figures(label: str, f: dict[str, Any] | None, pending: str) -> list[Any]:
        if f is None:
            return [label, Text(pending, style="yellow"), "", "", "", ""]
        return [label, str(f["requests"]), _fmt(f["rps"]), _fmt(f["error_rate_percent"]), _fmt(f["p50_ms"]),
                _fmt(f["p99_ms"])]  # fmt: skip

    last = f"last {_fmt(view.interval['seconds'])}s" if view.interval else "last"
    window = f"window {_fmt(view.window['seconds'])}s" if view.window else f"window {s.window_seconds:g}s"
    pending = "baseline…" if s.baseline else "…"
    trend_rps = f"req/s {sparkline(view.trend_rps[-20:])}"
    trend_p99 = f"P99 {sparkline(view.trend_p99[-20:])}"
    return [
        [name, state, chaos_text, *figures(last, view.interval, pending), trend_rps],
        ["", "", "", *figures(window, view.window, pending), trend_p99],
    ]


def _violation_text(v: dict[str, Any]) -> str:
    if v.get("threshold") is None:
        return f"{v.get('rule')}: {v.get('message')}"
    from .policy.decision import InvalidDecision, _violation  # the gate's own summary: same numbers, same format

    try:
        return f"{_violation(0, v).summary()} — {v.get('message')}"
    except InvalidDecision:
        return f"{v.get('rule')}: {v.get('message')}"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
