"""Chaos state and the pure ASGI middleware that applies it.

The state is an immutable snapshot swapped in one assignment: a request reads the snapshot once and acts on
it, so a concurrent POST /chaos can never leave a half-updated state visible (no lock needed on one event
loop, and still correct if read from another thread).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

ChaosMode = Literal["none", "slow", "error"]

MAX_SLOW_SECONDS = 30.0
# Observing and recovering must always work, whatever fault is injected.
EXEMPT_PATHS = frozenset({"/metrics", "/healthz", "/chaos"})
CHAOS_ACTIVE_CODES: dict[str, int] = {"none": 0, "slow": 1, "error": 2}


@dataclass(frozen=True, slots=True)
class ChaosSnapshot:
    mode: ChaosMode = "none"
    duration: float | None = None  # seconds each request sleeps (slow)
    rate: float | None = None  # fraction of requests answered 500 (error)
    since: str | None = None  # UTC RFC 3339 time the fault was injected

    @property
    def active_code(self) -> int:
        return CHAOS_ACTIVE_CODES[self.mode]

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "duration": self.duration,
            "rate": self.rate,
            "active": self.active_code,
            "since": self.since,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChaosState:
    """The one fault currently injected; a new fault replaces the previous one."""

    def __init__(self) -> None:
        self._current = ChaosSnapshot()

    @property
    def current(self) -> ChaosSnapshot:
        return self._current

    def slow(self, duration: float) -> ChaosSnapshot:
        if not 0 < duration <= MAX_SLOW_SECONDS:
            raise ValueError(f"duration must be > 0 and <= {MAX_SLOW_SECONDS:g} seconds, got {duration!r}")
        self._current = ChaosSnapshot("slow", duration=float(duration), since=_now())
        return self._current

    def error(self, rate: float) -> ChaosSnapshot:
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be > 0 and <= 1, got {rate!r}")
        self._current = ChaosSnapshot("error", rate=float(rate), since=_now())
        return self._current

    def recover(self) -> ChaosSnapshot:
        self._current = ChaosSnapshot()
        return self._current


def is_exempt(path: str) -> bool:
    # "/healthz/" only redirects to "/healthz", but it must not be failed by chaos either.
    return path in EXEMPT_PATHS or path.rstrip("/") in EXEMPT_PATHS


class ChaosMiddleware:
    """Delays (slow) or fails (error) every HTTP request except the exempt paths.

    Pure ASGI on purpose: BaseHTTPMiddleware adds a task and a stream per request.
    """

    def __init__(self, app: ASGIApp, *, state: ChaosState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        snapshot = self.state.current
        if snapshot.mode == "slow" and snapshot.duration:
            await asyncio.sleep(snapshot.duration)  # yields: other requests keep flowing
        elif snapshot.mode == "error" and snapshot.rate and random.random() < snapshot.rate:
            body = json.dumps(
                {"error": "chaos: injected error", "chaos": "error", "rate": snapshot.rate, "path": scope["path"]}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
