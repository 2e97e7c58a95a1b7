"""Window math over two scrapes: counter deltas, error rate and latency quantiles (docs/contracts.md#metrics).

Semantics follow PromQL: a counter that went down was reset (the process restarted), so its delta is its new
value, as `rate()` does; quantiles are `histogram_quantile()` over the bucket deltas - linear interpolation
inside the bucket, 0 as the lower bound of the first bucket, and the highest finite bound when the quantile
falls in +Inf.

Only application traffic counts: scrapes and probes (/metrics, /healthz or the manifest's services.health_path) and
chaos control (/chaos) are left out, so observing a track never dilutes its error rate or latency.

A replicated track (swarm: `Scrape.parts`, one scrape per replica) is windowed replica by replica, then summed:
each replica's counter deltas are added per series and its histogram buckets bucket by bucket; a replica that
restarted (its uptime or a counter went down) resets only its own counters; a replica new at the end counts from
zero; a replica seen at the start but gone at the end is `replicas_lost`: part of the window is unseen, so the
promotion paths refuse to decide on it (`require_seen`). A track with one URL (docker, local) is one part.

Besides the quantiles the window keeps the histogram itself as `slower_than_ms` (requests slower than each finite
bucket bound): the canary gate counts slow requests from it (swiftdeploy.judge) rather than trusting a P99 of a
few dozen samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import OperationFailed
from .scrape import Scrape

if TYPE_CHECKING:
    from ..manifest import Manifest

EXCLUDED_PATHS = frozenset({"/metrics", "/healthz", "/chaos"})


def excluded_paths(m: Manifest | None) -> frozenset[str]:
    """The paths no window figure counts: EXCLUDED_PATHS and the app's own health path."""
    return EXCLUDED_PATHS | {m.services.health_path} if m is not None else EXCLUDED_PATHS


K = TypeVar("K", bound=tuple)


@dataclass(frozen=True)
class TrackWindow:
    requests: int
    errors: int
    error_rate_percent: float
    p50_ms: float | None  # None when the window saw no requests
    p99_ms: float | None
    seconds: float
    restarted: bool = False  # a counter reset was seen (the track restarted inside the window)
    # finite bucket bound in ms -> requests slower than it (empty when the track exposes no histogram)
    slower_than: dict[float, int] = field(default_factory=dict)
    # A replicated track (Scrape.parts): replicas read at the end (0: a track with one URL), the task ids of those
    # new since the start (counted from zero), restarted inside the window (their own counters reset), and gone
    # at the end (their requests since the start are unseen: see require_seen).
    replicas: int = 0
    replicas_new: tuple[str, ...] = ()
    replicas_restarted: tuple[str, ...] = ()
    replicas_lost: tuple[str, ...] = ()

    def slower_than_ms(self) -> dict[str, int]:
        """{"500": 3, ...}: requests slower than each finite histogram bound, keyed by the bound in ms."""
        return {f"{bound:g}": count for bound, count in sorted(self.slower_than.items())}

    def to_input(self) -> dict[str, Any]:
        """The TRACK object of the canary policy input (docs/contracts.md#inputs, docs/policies.md);
        `slower_than_ms` only when the track exposes a latency histogram."""
        track: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate_percent": self.error_rate_percent,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }
        if self.slower_than:
            track["slower_than_ms"] = self.slower_than_ms()
        return track


def window(before: Scrape, after: Scrape, excluded: frozenset[str] = EXCLUDED_PATHS) -> TrackWindow:
    """What one track served between two scrapes of it: requests, 5xx errors, error rate, P50/P99, seconds.
    Requests to the `excluded` paths do not count (`excluded_paths(m)` adds the manifest's health path).
    Replica by replica when the scrapes have parts (see the module doc)."""
    start, end = _parts(before), _parts(after)
    counts: dict[tuple, float] = {}
    buckets: dict[tuple, float] = {}
    restarted: list[str] = []
    for task, now in end.items():
        then = start.get(task)
        if then is None:  # new since the start: everything it counted is inside the window
            then = Scrape(url=now.url, at=now.at)
        reset = _restarted(then, now)
        _add(counts, _deltas(then.requests, now.requests, reset))
        _add(buckets, _deltas(then.buckets, now.buckets, reset))
        if reset or any(now.requests.get(k, 0.0) < v for k, v in then.requests.items()):
            restarted.append(task)
    requests = errors = 0.0
    for (_method, path, status), value in counts.items():
        if path in excluded:
            continue
        requests += value
        if status.startswith("5"):
            errors += value
    by_le: dict[float, float] = {}
    for (_method, path, le), value in buckets.items():
        if path not in excluded:
            by_le[le] = by_le.get(le, 0.0) + value
    requests_n, errors_n = round(requests), round(errors)
    rate = round(100.0 * errors_n / requests_n, 3) if requests_n else 0.0
    parted = bool(before.parts or after.parts)
    return TrackWindow(
        requests=requests_n,
        errors=errors_n,
        error_rate_percent=rate,
        p50_ms=_ms(histogram_quantile(0.5, by_le)),
        p99_ms=_ms(histogram_quantile(0.99, by_le)),
        seconds=round(max(after.at - before.at, 0.0), 3),
        restarted=bool(restarted),
        slower_than=_slower_than(by_le, requests_n),
        replicas=len(after.parts) if parted else 0,
        replicas_new=tuple(sorted(set(end) - set(start))) if parted else (),
        replicas_restarted=tuple(sorted(restarted)) if parted else (),
        replicas_lost=tuple(sorted(set(start) - set(end))) if parted else (),
    )


def require_seen(windows: Mapping[str, TrackWindow]) -> None:
    """Raise OperationFailed when a replica of a track ({track: window}) disappeared during its window: the
    requests it served since the window started (errors included) were never read, so no gate may decide on
    that window. The promotion paths call it before asking the policy."""
    for track, w in windows.items():
        if w.replicas_lost:
            which = ", ".join(w.replicas_lost)
            many = len(w.replicas_lost) > 1
            raise OperationFailed(
                f"replica{'s' if many else ''} {which} of the {track} disappeared during the window: "
                f"{'their' if many else 'its'} requests are unseen; run again",
                hint="the runtime replaced or stopped a replica (see `swiftdeploy ps`); a new window sees only "
                "the replicas running then",
            )


def _parts(s: Scrape) -> Mapping[str, Scrape]:
    """{task id: scrape} of a replicated track; a track with one URL is one part."""
    return s.parts if s.parts else {"": s}


def _add(total: dict[K, float], deltas: Mapping[K, float]) -> None:
    for key, value in deltas.items():
        total[key] = total.get(key, 0.0) + value


def _slower_than(buckets: Mapping[float, float], requests: int) -> dict[float, int]:
    """Requests slower than each finite bound (ms), from cumulative bucket deltas; at most `requests` (the counter
    and the histogram are separate series, and a scrape can fall between their updates)."""
    if math.inf not in buckets:
        return {}
    total = buckets[math.inf]
    out: dict[float, int] = {}
    running = 0.0
    for le in sorted(b for b in buckets if b != math.inf):
        running = max(running, buckets[le])  # PromQL's repair of non-monotonic buckets
        out[round(le * 1000.0, 6)] = min(requests, max(0, round(total - running)))
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative bucket counts {le: count}; None when there are no samples."""
    if not buckets or math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):  # PromQL repairs non-monotonic buckets (scrape races) the same way
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return None
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    rank = q * total
    b = next((i for i in range(len(bounds) - 1) if counts[i] >= rank), len(bounds) - 1)
    if b == len(bounds) - 1:  # in +Inf: the highest finite bound is all we know
        return bounds[-2] if len(bounds) > 1 else None
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def _restarted(before: Scrape, after: Scrape) -> bool:
    return before.uptime is not None and after.uptime is not None and after.uptime < before.uptime


def _deltas(before: Mapping[K, float], after: Mapping[K, float], restarted: bool) -> dict[K, float]:
    """Per-series increase; a series that went down (or a restarted process) counts from zero."""
    out: dict[K, float] = {}
    for key, value in after.items():
        old = before.get(key, 0.0)
        out[key] = value if restarted or value < old else value - old
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)
