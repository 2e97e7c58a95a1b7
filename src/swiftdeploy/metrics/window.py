"""Window math over two scrapes: counter deltas, error rate and latency quantiles (docs/contracts.md#metrics).

Semantics follow PromQL: a counter that went down was reset (the process restarted), so its delta is its new
value, as `rate()` does; quantiles are `histogram_quantile()` over the bucket deltas - linear interpolation
inside the bucket, 0 as the lower bound of the first bucket, and the highest finite bound when the quantile
falls in +Inf.

Only application traffic counts: scrapes and probes (/metrics, /healthz or the manifest's services.health_path) and
chaos control (/chaos) are left out, so observing a track never dilutes its error rate or latency.

Besides the quantiles the window keeps the histogram itself as `slower_than_ms` (requests slower than each finite
bucket bound): the canary gate counts slow requests from it (swiftdeploy.judge) rather than trusting a P99 of a
few dozen samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

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
    Requests to the `excluded` paths do not count (`excluded_paths(m)` adds the manifest's health path)."""
    restarted = _restarted(before, after)
    counts = _deltas(before.requests, after.requests, restarted)
    buckets = _deltas(before.buckets, after.buckets, restarted)
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
    return TrackWindow(
        requests=requests_n,
        errors=errors_n,
        error_rate_percent=rate,
        p50_ms=_ms(histogram_quantile(0.5, by_le)),
        p99_ms=_ms(histogram_quantile(0.99, by_le)),
        seconds=round(max(after.at - before.at, 0.0), 3),
        restarted=restarted or any(after.requests.get(k, 0.0) < v for k, v in before.requests.items()),
        slower_than=_slower_than(by_le, requests_n),
    )


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
