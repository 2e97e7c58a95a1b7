"""Canary facts from Prometheus metrics: scrape both tracks through the admin listener, wait, scrape again,
and turn the difference into the canary policy's input (docs/contracts.md#inputs). Library only: no printing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .scrape import Scrape, admin_url, parse, scrape
from .window import EXCLUDED_PATHS, TrackWindow, excluded_paths, histogram_quantile, window

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = [
    "EXCLUDED_PATHS",
    "Scrape",
    "TrackWindow",
    "admin_url",
    "canary_input",
    "excluded_paths",
    "histogram_quantile",
    "parse",
    "scrape",
    "window",
]


def canary_input(
    m: Manifest,
    window_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    *,
    timeout: float = 2.0,
    transport: Any = None,
) -> dict[str, Any]:
    """{"window_seconds", "canary": TRACK, "stable": TRACK} over `window_seconds` (measured between scrapes).

    Both tracks are scraped back to back at each end so they share one window. A scrape that fails raises
    OperationFailed naming the URL: a promotion never proceeds on partial evidence.
    """
    urls = {track: admin_url(m, track, "metrics") for track in ("canary", "stable")}
    before = {track: scrape(url, timeout, transport=transport) for track, url in urls.items()}
    sleep(window_seconds)
    after = {track: scrape(url, timeout, transport=transport) for track, url in urls.items()}
    tracks = {track: window(before[track], after[track], excluded_paths(m)) for track in urls}
    return {
        "window_seconds": tracks["canary"].seconds or float(window_seconds),
        "canary": tracks["canary"].to_input(),
        "stable": tracks["stable"].to_input(),
    }
