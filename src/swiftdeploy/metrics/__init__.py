"""Canary facts from Prometheus metrics: scrape both tracks through the admin listener, wait, scrape again,
and turn the difference into the canary policy's input (docs/contracts.md#inputs). Library only: no printing.

Every scrape site reads a track through `scrape_track` (scrape.py): one URL per track on docker and local, every
replica summed on swarm (docs/contracts.md#metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .scrape import (
    Scrape,
    admin_base,
    admin_url,
    parse,
    scrape,
    scrape_replicas,
    scrape_track,
    summed,
    track_urls,
)
from .window import EXCLUDED_PATHS, TrackWindow, excluded_paths, histogram_quantile, require_seen, window

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = [
    "EXCLUDED_PATHS",
    "Scrape",
    "TrackWindow",
    "admin_base",
    "admin_url",
    "canary_input",
    "excluded_paths",
    "histogram_quantile",
    "parse",
    "require_seen",
    "scrape",
    "scrape_replicas",
    "scrape_track",
    "summed",
    "track_urls",
    "window",
]
TRACKS = ("canary", "stable")


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
    OperationFailed naming the URL (on swarm: the replica): a promotion never proceeds on partial evidence. On a
    runtime with replicas the replicas are listed again at the end: one gone by then raises OperationFailed
    (`require_seen`: its requests in the window are unseen), one new counts from zero.
    """
    before = {track: scrape_track(m, track, timeout, transport=transport) for track in TRACKS}
    sleep(window_seconds)
    after = {track: scrape_track(m, track, timeout, transport=transport) for track in TRACKS}
    tracks = {track: window(before[track], after[track], excluded_paths(m)) for track in TRACKS}
    require_seen(tracks)
    return {
        "window_seconds": tracks["canary"].seconds or float(window_seconds),
        "canary": tracks["canary"].to_input(),
        "stable": tracks["stable"].to_input(),
    }
