"""What `swiftdeploy status` sees: per-track figures and both policy verdicts, as a Snapshot (library, no printing).

A `StatusCollector` keeps what one refresh needs from the previous ones, all bounded:
- the previous scrape of each track (figures over the last interval: "collecting baseline" until there is one);
- the scrapes of the last policy window (figures over the window: the oldest scrape not older than the window);
- the last TREND_POINTS interval values of req/s and P99 (sparklines).

Each refresh first re-reads the manifest when its file changed (inode, size or mtime: one stat otherwise), so
mode, thresholds, window and ports follow `promote`/`rollback` or an edit made elsewhere; an invalid edit keeps
the last valid manifest and says so (`Snapshot.manifest_error`). Then it scrapes every track (metrics, healthz,
chaos) through the admin listener, or through the per-track base URLs given to the collector (tests point them
straight at demo API processes); without given URLs a track's metrics are read with `metrics.scrape_track` (on
swarm: every replica, summed; a replica lost since the window started restarts that track's window). A track
that does not answer is "down" (or "absent" when the manifest runs no canary), one that answers but whose health
check does not is "starting"; the canary policy is only asked about tracks it can see. Nothing here raises for a
dead track or a failing policy engine: the snapshot says so.

`refreshes(collector, interval)` is the one refresh loop (live `status`, `status --once` through `snapshot()`,
and the demo's sampler): collect, let a `StatusRecorder` decide whether this refresh becomes a `status` record in
history.jsonl (when something in it changed, else at most every `history.status_every` seconds; a record's
figures cover the whole time since the previous record), yield, wait. No printing and no Rich here:
`swiftdeploy.cli.output.render_snapshot` draws a Snapshot.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import history
from .errors import OperationFailed, PolicyBlocked, PolicyEngineUnavailable, SwiftDeployError

if TYPE_CHECKING:
    import threading

    from .manifest import Manifest
    from .metrics import Scrape

TRACKS = ("stable", "canary")
DOMAINS = ("infrastructure", "canary")
TREND_POINTS = 40
_CHAOS_CODES = {0: "none", 1: "slow", 2: "error"}  # the chaos_active gauge (docs/contracts.md#metrics)

# Verdicts a domain can show. Only "allow" lets `status --once` exit 0 (see exit_code()).
BASELINE = "collecting baseline"
NOT_APPLICABLE = "not applicable"
NOT_EVALUATED = "not evaluated"  # the canary is down or starting: the policy is not asked about what it cannot see
UNAVAILABLE = "engine unavailable"
ERROR = "error"
# Track states. A track that should run (stable; the canary in canary mode) and is not UP makes `--once` exit 1.
UP, STARTING, DOWN, ABSENT = "up", "starting", "down", "absent"


@dataclass
class TrackView:
    track: str
    state: str  # "up" | "starting" (answers, health check not ok) | "down" | "absent" (no canary in this mode)
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
    scrape: Scrape | None = field(default=None, repr=False, compare=False)  # this refresh's scrape (not shown)
    replicas: int | None = None  # replicas read and summed (a runtime with replicas: swarm); None: one URL
    replicas_lost: list[str] = field(default_factory=list)  # gone since the window started: a new window starts
    # a runtime with replicas: what it says of the track's tasks when they are not all serving ("1/3 tasks running
    # (manager); .2 on worker-1: running (node down)"), None when every task serves
    tasks_degraded: str | None = None

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
        if self.replicas is not None:  # only on a runtime with replicas: docker and local output is unchanged
            out["replicas"] = self.replicas
            out["replicas_lost"] = self.replicas_lost
            out["tasks_degraded"] = self.tasks_degraded
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
    host: dict[str, Any] | None = None  # infrastructure facts (docs/contracts.md#inputs)
    manifest_error: str | None = None  # the manifest was edited into something invalid: the last valid one is used
    at: float = field(default=0.0, repr=False, compare=False)  # the collector's clock at this refresh
    seq: int = field(default=0, repr=False, compare=False)  # the collector's refresh count at this refresh

    @property
    def baseline(self) -> bool:
        return self.interval_seconds is None

    @property
    def engines(self) -> list[str]:
        return sorted({d.engine for d in self.decisions.values() if d.engine})

    @property
    def expected(self) -> tuple[str, ...]:
        """The tracks that should be running in this mode."""
        return TRACKS if self.mode == "canary" else ("stable",)

    def exit_code(self) -> int:
        """`status --once`: 1 when a track that should run is down or starting (an outage is an outage, not a
        policy block, whatever the policy says); else 3 when a domain denies / is inconclusive / has not enough
        data, 4 when the engine could not answer (and nothing denied), 0 when every evaluated domain allows.
        `not applicable` (no canary in stable mode) and `not evaluated` (the canary is down) do not block."""
        if any(view.state in (DOWN, STARTING) for name, view in self.tracks.items() if name in self.expected):
            return OperationFailed.exit_code
        verdicts = [d.verdict for d in self.decisions.values() if d.verdict not in (NOT_APPLICABLE, NOT_EVALUATED)]
        if any(v not in ("allow", UNAVAILABLE) for v in verdicts):
            return PolicyBlocked.exit_code
        if UNAVAILABLE in verdicts:
            return PolicyEngineUnavailable.exit_code
        return 0

    def signature(self) -> tuple[Any, ...]:
        """What makes a refresh worth a record of its own (docs/history.md#the-status-stream): the mode, each
        track's state, health, mode, version and chaos, each domain's verdict, engine and violated rules. Not the
        figures: they change every refresh, and the next record covers them anyway."""
        tracks = tuple(
            (name, v.state, v.health, v.mode, v.version, *(_chaos_key(v.chaos)))
            for name, v in sorted(self.tracks.items())
        )
        decisions = tuple(
            (name, d.verdict, d.engine, tuple(sorted(str(x.get("rule")) for x in d.violations if isinstance(x, dict))))
            for name, d in sorted(self.decisions.items())
        )
        return (self.project, self.mode, self.baseline, self.manifest_error is not None, tracks, decisions)

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
            "manifest_error": self.manifest_error,
        }

    def record(self) -> dict[str, Any]:
        """The fields of this snapshot's `status` history record (no ts: history.append stamps it; no trends:
        they are the previous records)."""
        data = self.to_dict(trends=False)
        del data["ts"]
        for decision in data["decisions"].values():
            decision.pop("input", None)  # the figures are in `tracks` and `host` already
        return data


def _chaos_key(chaos: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    chaos = chaos or {}
    return chaos.get("mode"), chaos.get("rate"), chaos.get("duration")


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
        self._fixed_urls = urls is not None
        self._fixed_window = window_seconds is not None
        self._manifest_key = self._stat()
        self.manifest_error: str | None = None
        self._evaluate = evaluate
        self._host_facts = host_facts
        self._clock = clock
        self._previous: dict[str, Scrape] = {}
        self._window: dict[str, deque[Scrape]] = {t: deque(maxlen=10_000) for t in TRACKS}
        self._trend_rps: dict[str, deque[float]] = {t: deque(maxlen=TREND_POINTS) for t in TRACKS}
        self._trend_p99: dict[str, deque[float]] = {t: deque(maxlen=TREND_POINTS) for t in TRACKS}
        self._last_at: float | None = None
        # the scrapes and time of the last recorded refresh: a record's figures cover the time since then
        self._anchor: dict[str, Scrape] = {}
        self._anchor_at: float | None = None
        self._collects = 0
        self._anchor_seq = 0

    # --- the manifest, re-read when its file changes ---

    def _stat(self) -> tuple[int, ...] | None:
        source = self.m.source_path
        if source is None:
            return None
        try:
            st = os.stat(source)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> bool:
        """Re-read the manifest if its file changed since it was last read (one stat when it did not). Returns
        whether a new manifest is in use. An invalid or unreadable file keeps the last valid manifest and sets
        `manifest_error` until the file is fixed."""
        source = self.m.source_path
        key = self._stat()
        if source is None or key == self._manifest_key:
            return False
        from .errors import ManifestError
        from .manifest import load_manifest

        self._manifest_key = key
        if key is None:
            self.manifest_error = f"{source}: cannot read the manifest; showing its last valid version"
            return False
        try:
            m = load_manifest(source)
        except ManifestError as exc:
            problems = f" ({'; '.join(exc.problems[:3])})" if getattr(exc, "problems", None) else ""
            self.manifest_error = f"{exc}{problems}; showing its last valid version"
            return False
        self.m, self.manifest_error = m, None
        if not self._fixed_urls:
            self.urls = track_urls(m)
        if not self._fixed_window:
            self.window_seconds = float(m.policy.window_seconds)
        return True

    # --- one refresh ---

    def collect(self) -> Snapshot:
        self.reload()
        now = self._clock()
        self._collects += 1
        tracks = [t for t in TRACKS if t in self.urls]
        with ThreadPoolExecutor(max_workers=len(tracks) or 1) as pool:  # a hung track must not delay the other
            views = dict(zip(tracks, pool.map(self._track, tracks), strict=True))
        self._tasks(views)
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
            manifest_error=self.manifest_error,
            at=now,
            seq=self._collects,
        )

    def _track(self, track: str) -> TrackView:
        from .metrics import excluded_paths, scrape, scrape_track, window

        base = self.urls[track].rstrip("/")
        try:
            if self._fixed_urls:
                current = scrape(f"{base}/metrics", timeout=self.timeout)
            else:  # the one way to read a track: every replica, summed, on a runtime with replicas (swarm)
                current = scrape_track(self.m, track, timeout=self.timeout)
        except SwiftDeployError as exc:
            self._forget(track)
            state = ABSENT if track == "canary" and self.m.services.mode != "canary" else DOWN
            return TrackView(track, state, error=str(exc))
        view = TrackView(track, UP, scrape=current, replicas=len(current.parts) if current.parts else None)
        self._health(view, base, current)
        if view.health != "ok":
            view.state = STARTING  # answers, but its health check does not (yet): not ready for traffic
        previous = self._previous.get(track)
        if previous is not None:
            view.interval = _figures(window(previous, current, excluded_paths(self.m)))
        self._previous[track] = current
        # policy window: drop scrapes older than the window, measure from the oldest one left
        kept = self._window[track]
        kept.append(current)
        while len(kept) > 1 and current.at - kept[0].at > self.window_seconds:
            kept.popleft()
        if len(kept) > 1:
            w = window(kept[0], current, excluded_paths(self.m))
            if w.replicas_lost:  # their requests since the window started are unseen: a new window starts here
                view.replicas_lost = list(w.replicas_lost)
                kept.clear()
                kept.append(current)
            else:
                view.window = _figures(w, track_input=True)
        if view.interval is not None:
            self._trend_rps[track].append(view.interval["rps"])
            self._trend_p99[track].append(view.interval["p99_ms"] or 0.0)
        view.trend_rps = list(self._trend_rps[track])
        view.trend_p99 = list(self._trend_p99[track])
        return view

    def _tasks(self, views: dict[str, TrackView]) -> None:
        """On a runtime with replicas: the engine's word on each track's tasks when not all of them serve (a node
        lost, a task starting or replaced), which the scrapes alone cannot show (they read the tasks that run)."""
        from .runtime import get_runtime, runtime_spec, service_of

        if self._fixed_urls or not runtime_spec(self.m).replicas:
            return
        try:
            states = get_runtime(self.m).health(self.m)
        except SwiftDeployError:
            return  # the scrapes already say what they could read
        for track, view in views.items():
            state = states.get(service_of(self.m, track))  # type: ignore[arg-type]
            if state is not None and not state.healthy:
                view.tasks_degraded = state.detail

    def _forget(self, track: str) -> None:
        """A down track restarts from scratch: a restarted process's counters are a new series."""
        self._previous.pop(track, None)
        self._window[track].clear()

    def _health(self, view: TrackView, base: str, current: Scrape) -> None:
        """/healthz and GET /chaos (not counted in the figures: metrics.window leaves them out). When they do not
        answer, the gauges of the scrape still give uptime, mode and the chaos mode."""
        from .localhttp import NoAnswer, request

        gauges = current.gauges
        view.uptime_seconds = gauges.get("app_uptime_seconds")
        if "app_mode" in gauges:
            view.mode = "canary" if gauges["app_mode"] == 1 else "stable"
        if "chaos_active" in gauges:
            view.chaos = {"mode": _CHAOS_CODES.get(int(gauges["chaos_active"]), "unknown")}

        try:
            status, raw = request("GET", f"{base}/healthz", timeout=self.timeout, limit=_ANSWER_MAX)
            body = _json(raw)
            view.health = "ok" if status == 200 else f"HTTP {status}"
            view.mode, view.version = body.get("mode", view.mode), body.get("version")
            uptime = body.get("uptime_seconds")
            if isinstance(uptime, int | float):
                view.uptime_seconds = float(uptime)
            status, raw = request("GET", f"{base}/chaos", timeout=self.timeout, limit=_ANSWER_MAX)
            chaos = _json(raw)
            if status == 200 and chaos.get("mode"):
                view.chaos = chaos
        except NoAnswer as exc:
            view.health = f"unreachable: {str(exc).split(':')[0]}"

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
        """The canary domain, asked only about tracks it can see: a down or starting canary is `not evaluated`
        (the outage is the answer: exit 1), one just back up has no window yet (`collecting baseline`), and a
        stable track that cannot be seen is sent as `null` (the contract's "no stable figures")."""
        canary = views.get("canary")
        if canary is None or canary.state == ABSENT:
            why = " (services.mode is stable)" if self.m.services.mode == "stable" else ""
            return DomainView("canary", NOT_APPLICABLE, message=f"no canary running{why}")
        if canary.state != UP:
            why = f"health check: {canary.health}" if canary.state == STARTING else "it does not answer"
            return DomainView("canary", NOT_EVALUATED, message=f"canary is {canary.state} ({why}): nothing to judge")
        if interval is None:
            return DomainView("canary", BASELINE, message="first refresh: no window yet")
        if canary.replicas_lost:
            lost = ", ".join(canary.replicas_lost)
            return DomainView(
                "canary", BASELINE, message=f"canary replica {lost} disappeared: its requests are unseen; new window"
            )
        if canary.window is None:
            return DomainView("canary", BASELINE, message="the canary just came up: no window yet")
        stable = views.get("stable")
        seen = stable is not None and stable.state == UP and stable.window is not None
        data = {
            "window_seconds": round(canary.window.get("seconds") or 0.0, 3),
            "canary": canary.window.get("input"),
            "stable": stable.window.get("input") if seen else None,  # type: ignore[union-attr]
        }
        return self._decide("canary", data)

    # --- the status record ---

    def record_fields(self, snap: Snapshot) -> dict[str, Any]:
        """The fields of the `status` record of `snap`, one of this collector's snapshots, recorded in the order
        they were collected: `Snapshot.record()`, with `interval_seconds` and each running track's `interval`
        figures covering the whole time since the previous record (`refreshes`: how many refreshes that spans),
        so thinning the records loses no request and no error. Moves that starting point to `snap`."""
        data = snap.record()
        for name, view in snap.tracks.items():
            anchor = self._anchor.pop(name, None)
            if view.scrape is None:
                continue  # down: a new series starts when it answers again
            if anchor is not None and anchor.at < view.scrape.at:
                from .metrics import window

                data["tracks"][name]["interval"] = _figures(window(anchor, view.scrape))
            self._anchor[name] = view.scrape
        if self._anchor_at is not None and self._anchor_at < snap.at:
            data["interval_seconds"] = round(snap.at - self._anchor_at, 3)
        data["refreshes"] = snap.seq - self._anchor_seq if self._anchor_at is not None else 1
        self._anchor_at, self._anchor_seq = snap.at, snap.seq
        return data


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


_ANSWER_MAX = 65536  # /healthz and /chaos answer a few hundred bytes


def _json(raw: bytes) -> dict[str, Any]:
    from . import safejson

    try:
        body = safejson.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- the refresh loop ---


class StatusRecorder:
    """Which refreshes become `status` records (docs/history.md#the-status-stream).

    A refresh is recorded when its `Snapshot.signature()` differs from the last recorded one (and then the
    refresh before it too, if it was not recorded: the last state before a change is kept with its figures), or
    when `every` seconds (default: the manifest's `history.status_every`, re-read with it) have passed since the
    last record. Everything in between is folded into the next record (`StatusCollector.record_fields`).
    """

    def __init__(self, collector: StatusCollector, every: float | None = None) -> None:
        self.collector = collector
        self.every = every
        self._signature: tuple[Any, ...] | None = None
        self._last_at = 0.0
        self._pending: Snapshot | None = None

    def offer(self, snap: Snapshot) -> list[tuple[Snapshot, dict[str, Any]]]:
        """The records to write for this refresh, oldest first: (snapshot, record fields); often none."""
        every = self.every if self.every is not None else self.collector.m.history.status_every
        signature = snap.signature()
        if signature == self._signature and snap.at - self._last_at < every:
            self._pending = snap
            return []
        due = [snap]
        if signature != self._signature and self._pending is not None:
            due.insert(0, self._pending)  # the state just before the change, with the figures up to it
        self._signature, self._last_at, self._pending = signature, snap.at, None
        return [(s, self.collector.record_fields(s)) for s in due]

    def flush(self) -> list[tuple[Snapshot, dict[str, Any]]]:
        """The refresh not recorded yet (the loop is ending), so the last state seen is kept."""
        pending, self._pending = self._pending, None
        return [] if pending is None else [(pending, self.collector.record_fields(pending))]


@dataclass
class Refresh:
    """One turn of the refresh loop: the snapshot, how many `status` records this turn wrote, and why one could
    not be written (if so)."""

    snapshot: Snapshot
    record_error: SwiftDeployError | None = None
    recorded: int = 0


def refreshes(
    collector: StatusCollector,
    interval: float,
    *,
    record_baseline: bool = True,
    every: float | None = None,
    count: int | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Refresh]:
    """The status refresh loop: every `interval` seconds (start to start) collect a Snapshot, record it in the
    manifest's history as a `status` record when a `StatusRecorder(collector, every)` says so, and yield it. Runs
    until `count` refreshes, until `stop` is set, or forever (the caller leaves it: Ctrl-C, break); when it ends,
    the last refresh not recorded yet is recorded. `record_baseline=False` leaves out the first refresh, which
    has no rates yet. A record that cannot be written does not end the loop: `Refresh.record_error` says so.
    """
    recorder = StatusRecorder(collector, every)
    done = 0
    try:
        while True:
            started = time.monotonic()
            snap = collector.collect()
            error, written = None, 0
            if record_baseline or not snap.baseline:
                error, written = _write(collector, recorder.offer(snap))
            yield Refresh(snap, error, written)
            done += 1
            if count is not None and done >= count:
                return
            pause = max(0.0, interval - (time.monotonic() - started))
            if stop is not None:
                if stop.wait(pause):
                    return
            else:
                sleep(pause)
    finally:
        _write(collector, recorder.flush())  # also on Ctrl-C and when the caller stops iterating


def _write(collector: StatusCollector, due: list[tuple[Snapshot, dict[str, Any]]]) -> tuple[Any, int]:
    error, written = None, 0
    for snap, fields in due:
        try:
            history.append(
                collector.m.history_path,
                "status",
                rotation=collector.m.history.rotation,
                at=history.parse_ts(snap.ts),
                **fields,
            )
            written += 1
        except SwiftDeployError as exc:
            error = exc
    return error, written


def snapshot(collector: StatusCollector, interval: float) -> Snapshot:
    """One snapshot with real rates (`status --once`): a baseline refresh, then `interval` seconds later the one
    that counts, recorded in history.jsonl (a record that cannot be written raises)."""
    *_, last = refreshes(collector, interval, record_baseline=False, count=2)
    if last.record_error is not None:
        raise last.record_error
    return last.snapshot
