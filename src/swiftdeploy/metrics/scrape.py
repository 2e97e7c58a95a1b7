"""Scrape one track's Prometheus /metrics (through the admin listener) into plain numbers.

Parsing uses prometheus_client's text parser; httpx (through swiftdeploy.localhttp, bounded in time and size) and
prometheus_client load only when scraping.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import OperationFailed

if TYPE_CHECKING:
    from ..manifest import Manifest

REQUESTS = "http_requests_total"
DURATION = "http_request_duration_seconds"
GAUGES = ("app_uptime_seconds", "app_mode", "chaos_active")
MAX_BYTES = 4 << 20  # the demo API's /metrics is a few kB; a bigger answer is refused, not parsed

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
    """URL of a track's endpoint on the admin listener, e.g. admin_url(m, "canary", "metrics")."""
    if track not in ("stable", "canary"):
        raise ValueError(f"track must be stable or canary, not {track!r}")
    return f"{admin_base(m)}/{track}/{what}"


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
