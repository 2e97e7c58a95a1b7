"""The runtime protocol: what the operations need from docker compose or from local processes.

Operations (swiftdeploy.ops) never know which runtime they drive. Tracks are "stable" and "canary"; services are
the app of each track ("app", "app-canary" with the default name) and "nginx".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
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


# What `ps` calls each service by what it does (anything else a runtime runs is a plain "service").
ROLES = {"nginx": "proxy", "opa": "policy engine"}


@dataclass
class ServiceInfo:
    """One service of the stack for `swiftdeploy ps`: what runs, where, which version, since when, how healthy."""

    service: str
    role: str  # stable | canary | proxy | policy engine | service (role_of)
    state: str  # running, or why not: absent (never started / removed), exited, restarting, created, ...
    health: str  # healthy | unhealthy | starting | - (not running)
    pid: int | None = None  # local runtime
    container: str | None = None  # docker runtime: the container's name
    ports: list[int] = field(default_factory=list)  # host ports it listens on (nginx: public, admin)
    version: str | None = None  # APP_VERSION of the running app
    uptime_seconds: float | None = None
    detail: str = ""  # the last health answer, the exit code, ...

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class LogLine:
    """One line of a service's log. `source` names where it came from when a view mixes several (local: the log
    file's name, e.g. `nginx-access`); None when the line already says so (docker compose's own prefix) or when
    there is one source."""

    text: str
    source: str | None = None


def role_of(m: Manifest, service: str) -> str:
    if service == m.services.name:
        return "stable"
    if service == m.canary_name:
        return "canary"
    return ROLES.get(service, "service")


def expected_services(m: Manifest) -> list[str]:
    """What a deploy of the manifest runs in its current mode (listed by `ps` even when absent); a runtime adds
    what else it runs (the OPA service)."""
    names = [m.services.name]
    if m.services.mode == "canary":
        names.append(m.canary_name)
    return [*names, "nginx"]


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

    def reload_proxy(self, m: Manifest, *, all_to_canary: bool = False, weight: int | None = None) -> None:
        """Point nginx at the manifest's current topology (mode, weight) without dropping connections: once this
        returns, new requests follow the new config and every request the old one accepted has finished.

        all_to_canary (canary mode only): every route goes to the canary, stable gets no request at all — the
        handover while `promote stable` replaces the stable app (NginxTarget.all_to_canary).
        weight (canary mode): split by this weight instead of canary.weight — a `rollout` step; the generated
        nginx.conf on disk keeps canary.weight."""

    def down(self, m: Manifest) -> list[str]:
        """Stop everything this runtime started for the manifest. Returns a line per service stopped."""

    def health(self, m: Manifest) -> dict[str, ServiceHealth]:
        """Per-service state, without waiting."""

    def wait_healthy(self, m: Manifest, services: list[str], timeout: float) -> None:
        """Block until every named service is healthy; HealthTimeout naming the laggard otherwise."""

    def logs_tail(self, m: Manifest, service: str, n: int = 20) -> list[str]:
        """The last lines of a service's log."""

    def services(self, m: Manifest) -> list[ServiceInfo]:
        """Every service of the stack, without waiting: the expected ones (`expected_services`, state `absent` when
        not running) and every other one the runtime runs or remembers (an exited process, the OPA service)."""

    def logs(self, m: Manifest, services: Sequence[str], *, tail: int = 100, follow: bool = False) -> Iterator[LogLine]:
        """The last `tail` lines of each named service's log (all services when empty); with `follow`, then every
        new line as it is written, until the consumer stops iterating (Ctrl-C)."""


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
