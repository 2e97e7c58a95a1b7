"""Scrape one track's Prometheus /metrics (through the admin listener) into plain numbers.

`scrape_track(m, track)` is the one way every scrape site reads a track: on a runtime that runs one process per
track (docker, local) it scrapes the track's one URL (`admin_url`); on a runtime that runs replicas
(RuntimeSpec.replicas: swarm) it scrapes every running replica (`track_urls`: the runtime's `task_urls`) and
returns their sum, each replica's own scrape kept in `Scrape.parts` so that window math (window.py) takes deltas
per replica. A replica that cannot be read fails the whole track: a gate never proceeds on a track it cannot fully
see.

Parsing uses prometheus_client's text parser; httpx (through swiftdeploy.localhttp, bounded in time and size) and
prometheus_client load only when scraping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import OperationFailed

if TYPE_CHECKING:
    from ..manifest import Manifest

REQUESTS = "http_requests_total"
DURATION = "http_request_duration_seconds"
GAUGES = ("app_uptime_seconds", "app_mode", "chaos_active")
MAX_BYTES = 4 << 20  # the demo API's /metrics is a few kB; a bigger answer is refused, not parsed
MAX_REPLICAS = 256  # a track's replicas scraped at once (beyond it the scrape is refused: not a swiftdeploy stack)
SCRAPE_THREADS = 8  # replicas scraped in parallel, so one look costs about one scrape, not one per replica

# (method, path, status_code) and (method, path, le)
CounterKey = tuple[str, str, str]
BucketKey = tuple[str, str, float]


@dataclass(frozen=True)
class Scrape:
    url: str
    at: float  # time.monotonic() when the answer arrived
    requests: dict[CounterKey, float] = field(default_factory=dict)
    buckets: dict[BucketKey, float] = field(default_factory=dict)  # cumulative counts, le=inf included
    gauges: dict[str, float] = field(default_factory=dict)
    # A replicated track (RuntimeSpec.replicas): task id -> that replica's own scrape; requests, buckets and gauges
    # above are then their sum (gauges: see `summed`). Empty for a track with one URL (docker, local).
    parts: dict[str, Scrape] = field(default_factory=dict)

    @property
    def uptime(self) -> float | None:
        return self.gauges.get("app_uptime_seconds")


def admin_base(m: Manifest) -> str:
    """Where the admin listener is: `http://127.0.0.1:<nginx.admin_port>`, or on a runtime whose admin listener is a
    unix socket (RuntimeSpec.admin, swarm) `http+unix://<the socket's path, percent-encoded>` (localhttp)."""
    from urllib.parse import quote

    from ..runtime import admin_socket, runtime_spec

    if runtime_spec(m).admin == "unix":
        return "http+unix://" + quote(str(admin_socket(m)), safe="")
    return f"http://127.0.0.1:{m.nginx.admin_port}"


def admin_url(m: Manifest, track: str, what: str) -> str:
    """URL of a track's endpoint on the admin listener, e.g. admin_url(m, "canary", "metrics"):
    `http://127.0.0.1:<nginx.admin_port>/canary/metrics`, or on a unix-socket admin listener (swarm)
    `http+unix://<percent-encoded runtime.admin_socket(m)>/canary/metrics` (admin_base)."""
    if track not in ("stable", "canary"):
        raise ValueError(f"track must be stable or canary, not {track!r}")
    return f"{admin_base(m)}/{track}/{what}"


def track_urls(m: Manifest, track: str, what: str = "metrics") -> dict[str, str]:
    """Where a track's `what` is read: {task id: URL} of every running replica on a runtime that runs replicas
    (RuntimeSpec.replicas: the runtime's `task_urls`, which raises OperationFailed when the track has no running
    task), else {track: admin_url(m, track, what)}."""
    from ..runtime import get_runtime, runtime_spec

    if runtime_spec(m).replicas:
        runtime: Any = get_runtime(m)
        return dict(runtime.task_urls(m, track, what))
    return {track: admin_url(m, track, what)}


def scrape_track(m: Manifest, track: str, timeout: float = 2.0, *, transport: Any = None) -> Scrape:
    """The one way to read a track's metrics (see the module doc): its one URL's scrape (no parts) on a runtime
    that runs one process per track, the sum over every replica (with `parts`) on one that runs replicas.
    Raises OperationFailed when the track, or any one of its replicas, cannot be read."""
    from ..runtime import runtime_spec

    urls = track_urls(m, track)
    if not runtime_spec(m).replicas:
        (url,) = urls.values()
        return scrape(url, timeout, transport=transport)
    return scrape_replicas(urls, timeout, name=f"{track} track", transport=transport)


def scrape_replicas(
    urls: Mapping[str, str], timeout: float = 2.0, *, name: str = "track", transport: Any = None
) -> Scrape:
    """Scrape every replica of a track ({task id: /metrics URL}, at most SCRAPE_THREADS at a time, each bounded by
    `timeout`) and return their sum, each replica's scrape in `parts`. Raises OperationFailed naming the replica
    when any one cannot be read, and when there is no replica at all: the figures of a track are all of its
    replicas' or none."""
    if not urls:
        raise OperationFailed(
            f"the {name} has no replica to scrape", hint="is it deployed and running? see `swiftdeploy ps`"
        )
    if len(urls) > MAX_REPLICAS:
        raise OperationFailed(f"the {name} lists {len(urls)} replicas, more than {MAX_REPLICAS} (the limit)")

    def one(task: str) -> Scrape:
        try:
            return scrape(urls[task], timeout, transport=transport)
        except OperationFailed as exc:
            raise OperationFailed(
                f"replica {task} of the {name}: {exc.message}",
                hint="its node may be down or the task going away (`swiftdeploy ps` shows where the tasks run); "
                "nothing decides on a track it cannot fully see: run it again once every replica answers",
            ) from None

    from concurrent.futures import ThreadPoolExecutor

    tasks = sorted(urls)
    with ThreadPoolExecutor(max_workers=min(SCRAPE_THREADS, len(tasks))) as pool:
        futures = [pool.submit(one, task) for task in tasks]
        parts = {task: future.result() for task, future in zip(tasks, futures, strict=True)}
    return summed(f"{len(parts)} replicas of the {name}", parts)


def summed(url: str, parts: Mapping[str, Scrape]) -> Scrape:
    """One Scrape for a track from its replicas' scrapes: counters and histogram buckets added series by series;
    gauges: app_uptime_seconds the youngest replica's (the smallest), the others the largest value (chaos_active:
    the strongest chaos any replica runs). `at` is when the last answer arrived."""
    requests: dict[CounterKey, float] = {}
    buckets: dict[BucketKey, float] = {}
    gauges: dict[str, float] = {}
    for part in parts.values():
        for key, value in part.requests.items():
            requests[key] = requests.get(key, 0.0) + value
        for bkey, value in part.buckets.items():
            buckets[bkey] = buckets.get(bkey, 0.0) + value
        for gauge, value in part.gauges.items():
            pick = min if gauge == "app_uptime_seconds" else max
            gauges[gauge] = pick(gauges[gauge], value) if gauge in gauges else value
    at = max((part.at for part in parts.values()), default=0.0)
    return Scrape(url=url, at=at, requests=requests, buckets=buckets, gauges=gauges, parts=dict(parts))


def scrape(url: str, timeout: float = 2.0, *, transport=None) -> Scrape:
    """GET `url` and parse it (through localhttp: `timeout` bounds the whole request, at most MAX_BYTES are read).
    Raises OperationFailed naming the URL when it cannot be read or parsed, or is bigger than MAX_BYTES."""
    from ..localhttp import NoAnswer, TimedOut, Unacceptable, fetch

    try:
        answer = fetch("GET", url, timeout=timeout, limit=MAX_BYTES, truncate=False, transport=transport)
    except TimedOut as exc:
        raise OperationFailed(
            f"scraping {url} timed out after {timeout:g} s ({exc})", hint="is the track overloaded?"
        ) from None
    except Unacceptable as exc:
        raise OperationFailed(
            f"scraping {url}: the answer is refused: {exc}",
            hint="a swiftdeploy track's /metrics is a few kB; is something else answering on the admin listener?",
        ) from None
    except NoAnswer as exc:
        raise OperationFailed(
            f"cannot scrape {url}: {exc}",
            hint="is the stack deployed? run `swiftdeploy deploy`; the admin listener serves /<track>/metrics",
        ) from None
    text = answer.text()
    if answer.status != 200:
        raise OperationFailed(
            f"scraping {url} answered HTTP {answer.status}: {' '.join(text.split())[:200]}",
            hint="a 503 from the admin listener means that track is not running",
        )
    return parse(url, text, at=time.monotonic())


def parse(url: str, text: str, *, at: float = 0.0) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    requests: dict[CounterKey, float] = {}
    buckets: dict[BucketKey, float] = {}
    gauges: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == REQUESTS:
                    key = (labels.get("method", ""), labels.get("path", ""), labels.get("status_code", ""))
                    requests[key] = requests.get(key, 0.0) + sample.value
                elif sample.name == f"{DURATION}_bucket":
                    le = float(labels.get("le", "nan"))
                    if not math.isnan(le):
                        bkey = (labels.get("method", ""), labels.get("path", ""), le)
                        buckets[bkey] = buckets.get(bkey, 0.0) + sample.value
                elif sample.name in GAUGES:
                    gauges[sample.name] = sample.value
    except ValueError as exc:
        raise OperationFailed(f"{url} is not Prometheus text format: {exc}") from exc
    return Scrape(url=url, at=at, requests=requests, buckets=buckets, gauges=gauges)
