"""Canary judgement: the evidence swiftdeploy computes for the canary policy, and the watch behind `promote stable`.

swiftdeploy computes, the policy decides. From each track's window (metrics/window.py) this module computes the
`evidence` object of the canary policy input: counts, exact confidence bounds and ratio bounds (swiftdeploy.stats).
It compares no threshold: the thresholds it reads are the *parameters* of the computation (the confidence levels,
the latency to count slow requests at, the rates an allow must clear for the "requests needed" estimate), and it
echoes them in `evidence.thresholds` so the policy can refuse evidence computed for other thresholds. The Rego
policy (policies/canary.rego) compares the bounds with the thresholds and answers allow, deny or inconclusive.

Two ways to look at the data (docs/policies.md explains them for people):
- `fixed`: one window judged once (`judge_canary`, `policy eval`, `status`): exact Clopper-Pearson bounds and the
  exact conditional test of the error-rate ratio.
- `sequential`: the `promote stable` watch (`watch_canary`) looks at every scrape and stops at the first clear
  answer; its bounds are confidence sequences (stats.seq_lower/seq_upper), valid at every look at once, so looking
  again and again does not inflate wrong verdicts.

Stdlib only at import time (the manifest, policy engine and HTTP client load when used).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import stats
from .format import format_number

if TYPE_CHECKING:
    from .manifest import Manifest
    from .policy import Decision

METHODS = ("fixed", "sequential")
# The thresholds the evidence computation reads (echoed in evidence.thresholds; the policy checks they match).
EVIDENCE_THRESHOLDS = (
    "deny_confidence_percent",
    "ratio_confidence_percent",
    "allow_confidence_percent",
    "max_p99_latency_ms",
    "max_p99_ratio",
    "min_p99_ms_for_ratio",
    "bad_error_rate_percent",
    "bad_slow_percent",
    "min_requests",
)
QUANTILES = ((0.5, "p50_ms"), (0.99, "p99_ms"))  # what a TRACK without slower_than_ms tells about latencies


class EvidenceError(ValueError):
    """The tracks or thresholds cannot be turned into evidence (the policy then names what is wrong)."""


class WatchProgress(str):
    """A progress message that replaces the previous one (the watch's ticker); `transient` tells renderers, `look`
    is the look it describes (None outside the watch)."""

    transient = True
    look: Look | None = None


# --- reading a TRACK ------------------------------------------------------------------------------------------


def _count(track: Mapping[str, Any], name: str) -> int:
    value = track.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != math.floor(value):
        raise EvidenceError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def _latency(track: Mapping[str, Any], name: str) -> float | None:
    value = track.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise EvidenceError(f"{name} must be a number >= 0 or null, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Track:
    """The counts of one track's window that the evidence rests on."""

    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    slower_than_ms: dict[float, int] | None  # histogram bound (ms) -> requests slower than it; None: not known

    @classmethod
    def read(cls, track: Any) -> Track:
        if not isinstance(track, Mapping):
            raise EvidenceError("a track must be an object")
        requests, errors = _count(track, "requests"), _count(track, "errors")
        if errors > requests:
            raise EvidenceError("errors cannot exceed requests")
        slower = track.get("slower_than_ms")
        table: dict[float, int] | None = None
        if slower is not None:
            if not isinstance(slower, Mapping):
                raise EvidenceError("slower_than_ms must be an object {bound_ms: requests}")
            table = {}
            for key, value in slower.items():
                try:
                    bound = float(key)
                except ValueError:
                    raise EvidenceError(f"slower_than_ms key {key!r} is not a number of milliseconds") from None
                count = _count({"slower_than_ms": value}, "slower_than_ms")
                if not math.isfinite(bound) or bound < 0 or count > requests:
                    raise EvidenceError(f"slower_than_ms[{key!r}] = {value!r} is out of range")
                table[bound] = count
        return cls(requests, errors, _latency(track, "p50_ms"), _latency(track, "p99_ms"), table)

    def slower_than(self, ms: float) -> Slow:
        """How many requests were slower than `ms`: exact when `ms` is a histogram bound, else an interval between
        the bounds around it (at_least from the next bound up, at_most from the next bound down)."""
        n = self.requests
        if self.slower_than_ms is not None:
            bounds = sorted(self.slower_than_ms)
            up = next((b for b in bounds if b >= ms), None)
            down = next((b for b in reversed(bounds) if b <= ms), None)
            at_least = self.slower_than_ms[up] if up is not None else 0
            at_most = self.slower_than_ms[down] if down is not None else n
            return Slow(ms, at_least, max(at_least, at_most), n, "histogram", (down, up))
        # Only P50/P99 known: "P99 > ms" means at least 1 % of the requests were slower, "P99 <= ms" at most 1 %.
        at_least, at_most = 0, n
        for q, name in QUANTILES:
            value = getattr(self, name)
            if value is None:
                continue
            share = 1.0 - q
            if value > ms:
                at_least = max(at_least, math.ceil(share * n - 1e-9))
            else:
                at_most = min(at_most, math.floor(share * n + 1e-9))
        return Slow(ms, at_least, max(at_least, at_most), n, "quantiles", (None, None))


@dataclass(frozen=True)
class Slow:
    ms: float
    at_least: int
    at_most: int
    requests: int
    source: str  # "histogram" | "quantiles"
    buckets: tuple[float | None, float | None]  # histogram bounds used (for at_most, for at_least)


# --- the evidence ------------------------------------------------------------------------------------------------


def _alpha(thresholds: Mapping[str, Any], name: str) -> float:
    confidence = thresholds.get(name)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 50 <= confidence < 100:
        raise EvidenceError(f"threshold {name} must be a percentage in [50, 100), got {confidence!r}")
    return 1.0 - confidence / 100.0


def _number(thresholds: Mapping[str, Any], name: str) -> float:
    value = thresholds.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise EvidenceError(f"threshold {name} must be a number >= 0, got {value!r}")
    return float(value)


def _percent(fraction: float) -> float:
    return 100.0 * fraction


def _rate(
    at_least: int, at_most: int, n: int, alpha_deny: float, alpha_allow: float, sequential: bool
) -> dict[str, Any]:
    lower = stats.seq_lower if sequential else stats.cp_lower
    upper = stats.seq_upper if sequential else stats.cp_upper
    return {
        "count": at_least,
        "count_max": at_most,
        "requests": n,
        # the point value as the window reports it (3 decimals); the bounds stay exact, the policy compares them
        "observed_percent": round(_percent(at_least / n), 3) if n else 0.0,
        "lower_percent": _percent(lower(at_least, n, alpha_deny)) if n else 0.0,
        "upper_percent": _percent(upper(at_most, n, alpha_allow)) if n else 100.0,
    }


def _slow_rate(slow: Slow, alpha_deny: float, alpha_allow: float, sequential: bool) -> dict[str, Any]:
    out = _rate(slow.at_least, slow.at_most, slow.requests, alpha_deny, alpha_allow, sequential)
    down, up = slow.buckets
    out.update(latency_ms=slow.ms, source=slow.source, bucket_ms=[down, up])
    return out


def _needed(x: int, n: int, below: float, alpha: float, sequential: bool, minimum: int, rate: float) -> dict:
    """More canary requests (and seconds at `rate` req/s) until the allow bound drops below `below` (percent), if
    the rate seen so far goes on; None when it never would (the rate seen is not below it)."""
    total = stats.requests_needed(x, n, below / 100.0, alpha, sequential=sequential)
    more = None if total is None else max(0, max(total, minimum) - n)
    seconds = None if more is None or rate <= 0 else more / rate
    return {"requests_needed": more, "seconds_needed": seconds}


def evidence(
    canary: Any,
    stable: Any,
    window_seconds: float,
    thresholds: Mapping[str, Any],
    *,
    method: str = "fixed",
) -> dict[str, Any]:
    """The `evidence` object of the canary policy input (schema: docs/policies.md) from two TRACK objects.

    Raises EvidenceError when a track or a threshold it needs is malformed."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    sequential = method == "sequential"
    c = Track.read(canary)
    s = Track.read(stable) if stable is not None else None
    alpha_deny = _alpha(thresholds, "deny_confidence_percent")
    alpha_ratio = _alpha(thresholds, "ratio_confidence_percent")
    alpha_allow = _alpha(thresholds, "allow_confidence_percent")
    limit_ms = _number(thresholds, "max_p99_latency_ms")
    ratio, floor_ms = _number(thresholds, "max_p99_ratio"), _number(thresholds, "min_p99_ms_for_ratio")
    bad_errors, bad_slow = _number(thresholds, "bad_error_rate_percent"), _number(thresholds, "bad_slow_percent")
    minimum = int(_number(thresholds, "min_requests"))

    slow = c.slower_than(limit_ms)
    out: dict[str, Any] = {
        "method": method,
        "thresholds": {name: thresholds[name] for name in EVIDENCE_THRESHOLDS},
        "error_rate": _rate(c.errors, c.errors, c.requests, alpha_deny, alpha_allow, sequential),
        "p99_latency": _slow_rate(slow, alpha_deny, alpha_allow, sequential),
        "error_rate_vs_stable": None,
        "p99_vs_stable": None,
    }
    if s is not None and s.requests and c.requests:
        observed = None
        if s.errors:
            observed = (c.errors / c.requests) / (s.errors / s.requests)
        out["error_rate_vs_stable"] = {
            "canary_errors": c.errors,
            "canary_requests": c.requests,
            "stable_errors": s.errors,
            "stable_requests": s.requests,
            "observed_ratio": observed,
            "lower_ratio": stats.ratio_lower(
                c.errors, c.requests, s.errors, s.requests, alpha_ratio, sequential=sequential
            ),
        }
    if s is not None and s.p99_ms is not None and s.requests:
        # "canary P99 above max_p99_ratio x stable's" is "more than 1 % of the canary's requests slower than that".
        reference = max(ratio * s.p99_ms, floor_ms)
        relative = _slow_rate(c.slower_than(reference), alpha_deny, alpha_allow, sequential)
        relative.update(stable_p99_ms=s.p99_ms, stable_requests=s.requests)
        out["p99_vs_stable"] = relative
    rate = c.requests / window_seconds if window_seconds > 0 else 0.0
    out["error_rate"].update(_needed(c.errors, c.requests, bad_errors, alpha_allow, sequential, minimum, rate))
    out["p99_latency"].update(_needed(slow.at_most, c.requests, bad_slow, alpha_allow, sequential, minimum, rate))
    parts = (out["error_rate"]["requests_needed"], out["p99_latency"]["requests_needed"])
    more = None if None in parts else max(parts)  # type: ignore[type-var]
    out["canary_requests_per_second"] = rate
    out["requests_needed"] = more
    out["seconds_needed"] = None if more is None or rate <= 0 else more / rate
    return out


def canary_facts(
    canary: Any, stable: Any, window_seconds: float, thresholds: Mapping[str, Any], *, method: str = "fixed"
) -> dict[str, Any]:
    """The whole canary policy input: today's {window_seconds, canary, stable} plus the evidence."""
    return {
        "window_seconds": window_seconds,
        "canary": canary,
        "stable": stable,
        "evidence": evidence(canary, stable, window_seconds, thresholds, method=method),
    }


def with_evidence(input: Any, thresholds: Mapping[str, Any]) -> Any:
    """`input` with `evidence` derived (fixed window) when it has none and its tracks are well formed; otherwise
    `input` unchanged, so the policy reports what is missing or malformed (and denies)."""
    if not isinstance(input, dict) or "evidence" in input:
        return input
    seconds = input.get("window_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        return input
    if "stable" not in input:
        return input
    try:
        return {**input, "evidence": evidence(input.get("canary"), input["stable"], float(seconds), thresholds)}
    except EvidenceError:
        return input


def thresholds_of(m: Manifest | None) -> dict[str, Any]:
    """The thresholds the policies see (data.json merged with the manifest's overrides)."""
    from .policy.bundle import load_policy_set

    return dict(load_policy_set(m).thresholds)


# --- the library entry point ----------------------------------------------------------------------------------


def judge_canary(
    before: Mapping[str, str],
    after: Mapping[str, str],
    *,
    seconds: float,
    manifest: Manifest | None = None,
    method: str = "fixed",
) -> Decision:
    """Judge one window the way `promote stable` does: `before`/`after` map "canary" (and "stable", optional) to the
    Prometheus text scraped from that track at the window's start and end, `seconds` apart. Thresholds come from
    `manifest` (the defaults when None). Returns the policy's Decision; `decision.evidence` holds the evidence.

    `method="sequential"` computes the bounds the watch uses at one of its looks (wider: valid at every look)."""
    from .errors import InvalidInput
    from .metrics import parse, window
    from .metrics.window import excluded_paths
    from .policy import evaluate

    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise InvalidInput(f"seconds must be a number above 0, got {seconds!r}")
    if "canary" not in before or "canary" not in after:
        raise InvalidInput('before and after must both map "canary" to its Prometheus text')
    if ("stable" in before) != ("stable" in after):
        raise InvalidInput('"stable" must be in both before and after, or in neither')
    tracks: dict[str, dict[str, Any] | None] = {"stable": None}
    for track in [t for t in ("canary", "stable") if t in before]:
        w = window(
            parse(f"{track} (before)", before[track]), parse(f"{track} (after)", after[track]), excluded_paths(manifest)
        )
        tracks[track] = w.to_input()
    facts = canary_facts(tracks["canary"], tracks["stable"], float(seconds), thresholds_of(manifest), method=method)
    return evaluate(manifest, "canary", facts)


# --- the watch behind `promote stable` -------------------------------------------------------------------------


@dataclass
class Look:
    """One look of the watch: what it saw and what the policy answered."""

    elapsed: float
    facts: dict[str, Any]
    decision: Decision

    @property
    def clear(self) -> bool:
        return self.decision.verdict in ("allow", "deny")


def progress_line(look: Look, max_seconds: float) -> str:
    """`12 s of 120 s: 118 canary requests, 0 errors (< 2.5% at 95%), 0 slower than 500 ms (< 2.5%) - watching`"""
    ev = look.facts["evidence"]
    errors, slow = ev["error_rate"], ev["p99_latency"]
    n = errors["requests"]
    slow_count = format_number(slow["count"])
    if slow["count_max"] != slow["count"]:
        slow_count += f"-{format_number(slow['count_max'])}"
    confidence = format_number(ev["thresholds"]["allow_confidence_percent"], "%")
    parts = [
        f"{format_number(round(look.elapsed, 1))} s of {format_number(max_seconds)} s: {n} canary requests",
        f"{errors['count']} errors (< {format_number(errors['upper_percent'], '%')} at {confidence})",
        f"{slow_count} slower than {format_number(slow['latency_ms'], 'ms')} "
        f"(< {format_number(slow['upper_percent'], '%')})",
    ]
    if look.decision.verdict == "inconclusive":
        more = ev.get("requests_needed")
        parts.append("watching" if more is None else f"~{more} more requests needed")
    else:
        parts.append(look.decision.verdict)
    return ", ".join(parts)


def watch(
    scrape_tracks: Callable[[], dict[str, Any]],
    decide: Callable[[dict[str, Any]], Decision],
    thresholds: Mapping[str, Any],
    max_seconds: float,
    *,
    interval: float = 1.0,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    excluded: frozenset[str] | None = None,
) -> Look:
    """Look at the canary at every scrape (at most every `interval` s) and stop at the first allow or deny, or after
    `max_seconds`: returns the last look (its facts are what the gate then decides on).

    `scrape_tracks()` returns {"canary": Scrape, "stable": Scrape}; the window of each look runs from the first
    scrape to the latest (cumulative), the bounds are confidence sequences (method "sequential").

    A replica of a replicated track (swarm) gone since the first scrape raises OperationFailed (metrics
    `require_seen`): its requests since then are unseen. Restarting the baseline instead would throw the watch's
    evidence away and spend a fresh error budget at every restart (each new confidence sequence may err again),
    while what the lost replica served (its errors too) would never be judged; failing leaves everything as it was
    and a new run watches the replicas running then."""
    from .metrics.window import EXCLUDED_PATHS, require_seen, window

    skip = EXCLUDED_PATHS if excluded is None else excluded
    if not max_seconds > 0 or not interval > 0:
        raise ValueError("max_seconds and interval must be above 0")
    first = scrape_tracks()
    started = clock()
    deadline = started + max_seconds
    last_look = started
    while True:
        now = clock()
        wait = min(last_look + interval, deadline) - now
        if wait > 0:
            sleep(wait)
        latest = scrape_tracks()
        last_look = clock()
        windows = {track: window(first[track], latest[track], skip) for track in first}
        require_seen(windows)
        seconds = windows["canary"].seconds or (last_look - started) or interval
        facts = canary_facts(
            windows["canary"].to_input(),
            windows["stable"].to_input() if "stable" in windows else None,
            seconds,
            thresholds,
            method="sequential",
        )
        look = Look(elapsed=last_look - started, facts=facts, decision=decide(facts))
        if progress is not None:
            line = WatchProgress(progress_line(look, max_seconds))
            line.look = look  # for a view that shows more than the line (the rollout's live view)
            progress(line)
        if look.clear or last_look >= deadline:
            return look


def watch_canary(
    m: Manifest,
    max_seconds: float,
    *,
    interval: float | None = None,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 2.0,
    transport: Any = None,
) -> dict[str, Any]:
    """`promote stable`'s watch on a deployed stack: scrape both tracks (`metrics.scrape_track`: every replica on
    swarm) at every look and return the facts of the last look (the canary policy input, evidence method
    "sequential")."""
    from .metrics import scrape_track
    from .metrics.window import excluded_paths
    from .policy import select_engine

    engine = select_engine(m, transport=transport)
    try:
        look = watch(
            lambda: {track: scrape_track(m, track, timeout, transport=transport) for track in ("canary", "stable")},
            lambda facts: engine.evaluate("canary", facts),
            thresholds_of(m),
            max_seconds,
            interval=interval if interval is not None else m.policy.scrape_interval,
            progress=progress,
            sleep=sleep,
            excluded=excluded_paths(m),
        )
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    if progress is not None:  # the last look, kept on screen and in logs
        progress(f"watched the canary: {progress_line(look, max_seconds)}")
    return look.facts


# --- `validate`: is the latency threshold a bucket bound of the histogram? -------------------------------------


def histogram_bounds(m: Manifest, *, timeout: float = 1.0, transport: Any = None) -> tuple[str, list[float]]:
    """(where from, finite bucket bounds in ms) of the latency histogram: scraped from the running stable track
    when the admin listener answers, else the demo API's (the default app)."""
    from .errors import OperationFailed
    from .metrics import scrape_track

    try:
        found = scrape_track(m, "stable", timeout, transport=transport)
    except OperationFailed:
        found = None
    if found is not None:
        bounds = sorted({round(le * 1000.0, 6) for (_m, _p, le) in found.buckets if math.isfinite(le)})
        if bounds:
            return f"the histogram scraped from {found.url}", bounds
    from demo_api.metrics import DURATION_BUCKETS

    source = "the demo API's histogram (the stack is not running, so its own could not be read)"
    return source, [round(b * 1000.0, 6) for b in DURATION_BUCKETS]


def threshold_checks(m: Manifest, *, transport: Any = None) -> list[tuple[str, bool, str, str]]:
    """(check, ok, detail, fix) rows for `validate`: warnings (ok, detail starting "warning:") when the latency
    threshold is not a histogram bound, or a threshold that no longer has an effect is set."""
    thresholds = thresholds_of(m)
    rows: list[tuple[str, bool, str, str]] = []
    limit = thresholds.get("max_p99_latency_ms")
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        source, bounds = histogram_bounds(m, transport=transport)
        ms = format_number(float(limit), "ms")
        if float(limit) in bounds:
            rows.append(("latency buckets", True, f"max_p99_latency_ms {ms} is a bucket bound of {source}", ""))
        else:
            slow = Track(0, 0, None, None, {b: 0 for b in bounds}).slower_than(float(limit))
            down, up = slow.buckets
            used = (
                f"counts requests slower than {format_number(up, 'ms')} to deny"
                if up is not None
                else "cannot count any request as slower than it to deny"
            )
            allow = f"slower than {format_number(down, 'ms')}" if down is not None else "every request as slow"
            fix = ", ".join(format_number(b, "ms") for b in (down, up) if b is not None)
            rows.append(
                (
                    "latency buckets",
                    True,
                    f"warning: max_p99_latency_ms {ms} is not a bucket bound of {source}: the gate {used} and "
                    f"{allow} to allow",
                    f"set max_p99_latency_ms to a bucket bound ({fix}) or give the app's histogram a {ms} bucket",
                )
            )
    if m.policy.thresholds.max_error_rate_increase_percent is not None:
        rows.append(
            (
                "canary thresholds",
                True,
                "warning: policy.thresholds.max_error_rate_increase_percent no longer has an effect",
                "remove it; the relative error rule is max_error_rate_ratio (canary at most N times stable's)",
            )
        )
    return rows
