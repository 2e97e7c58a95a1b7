"""The runtime protocol: what the operations need from docker compose or from local processes.

Operations (swiftdeploy.ops) never know which runtime they drive. Tracks are "stable" and "canary"; services are
the app of each track ("app", "app-canary" with the default name) and "nginx".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from ..errors import HealthTimeout

if TYPE_CHECKING:
    from ..manifest import Manifest

Track = Literal["stable", "canary"]
Progress = Callable[[str], None]


@dataclass
class ServiceHealth:
    """One service as the runtime sees it."""

    service: str
    running: bool
    healthy: bool
    detail: str = ""  # last health answer, exit status or engine health text
    pid: int | None = None
    port: int | None = None
    version: str | None = None  # an app's APP_VERSION as the runtime started it (None: unknown, or nginx)
    image: str | None = None  # an app's image (local: APP_IMAGE)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _noop(_: str) -> None:
    pass


class Runtime(Protocol):
    name: str

    def up(self, m: Manifest, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        """Start (or converge) the whole stack for the manifest's current mode and wait until healthy."""

    def start_policy_engine(self, m: Manifest, *, timeout: float = 30.0, progress: Progress = _noop) -> None:
        """Start the policy engine service the stack runs (docker: the OPA container) and wait for its /health,
        so the first gate of a deploy can ask it. No-op when the runtime runs none (local, engine embedded).
        Engine `opa`: PolicyEngineUnavailable (exit 4) when OPA does not become healthy; `auto` falls back to the
        embedded engine then."""

    def start_track(self, m: Manifest, track: Track, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        """(Re)start one track's app with the manifest's settings for it and wait until healthy."""

    def stop_track(self, m: Manifest, track: Track) -> None:
        """Stop and remove one track's app (no error when it is not running)."""

    def reload_proxy(self, m: Manifest, *, all_to_canary: bool = False) -> None:
        """Point nginx at the manifest's current topology (mode, weight) without dropping connections: once this
        returns, new requests follow the new config and every request the old one accepted has finished.

        all_to_canary (canary mode only): every route goes to the canary, stable gets no request at all — the
        handover while `promote stable` replaces the stable app (NginxTarget.all_to_canary)."""

    def down(self, m: Manifest) -> list[str]:
        """Stop everything this runtime started for the manifest. Returns a line per service stopped."""

    def health(self, m: Manifest) -> dict[str, ServiceHealth]:
        """Per-service state, without waiting."""

    def wait_healthy(self, m: Manifest, services: list[str], timeout: float) -> None:
        """Block until every named service is healthy; HealthTimeout naming the laggard otherwise."""

    def logs_tail(self, m: Manifest, service: str, n: int = 20) -> list[str]:
        """The last lines of a service's log."""


def service_of(m: Manifest, track: Track) -> str:
    return m.services.name if track == "stable" else m.canary_name


def log_excerpt(lines: Sequence[str]) -> str:
    """The tail of a log for an error message ("" when there is none)."""
    return ("\n  last log lines:\n" + "\n".join(f"    {x}" for x in lines)) if lines else ""


def wait_until_healthy(
    runtime: Runtime,
    m: Manifest,
    services: Sequence[str],
    timeout: float,
    *,
    interval: float,
    fail_fast: bool,
    hint: Callable[[str], str],
) -> None:
    """The one `wait_healthy` loop of every runtime: poll `runtime.health(m)` until each service is healthy.

    Raises HealthTimeout naming the first laggard, its last health detail and the end of its log, after `timeout`
    seconds - or at once when `fail_fast` and it is not running (a runtime that restarts nothing by itself: a dead
    process stays dead; compose restarts a container, so docker waits). `hint(service)` says where to look.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = runtime.health(m)
        waiting = [s for s in services if not (states.get(s) and states[s].healthy)]
        if not waiting:
            return
        dead = [s for s in waiting if not (states.get(s) and states[s].running)] if fail_fast else []
        if dead or time.monotonic() >= deadline:
            service = (dead or waiting)[0]
            state = states.get(service)
            detail = state.detail if state else "not started"
            what = "stopped before becoming healthy" if dead else f"did not become healthy within {timeout:g}s"
            raise HealthTimeout(
                f"{service} {what}: {detail}" + log_excerpt(runtime.logs_tail(m, service, 10)), hint=hint(service)
            )
        time.sleep(interval)
