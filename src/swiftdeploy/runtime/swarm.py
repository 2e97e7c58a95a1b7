"""The swarm runtime: `docker stack deploy` of the generated docker-stack.yml on a Swarm manager (docs/swarm.md).

swiftdeploy runs on the manager. The stack (render/stack.py) holds the stable app (`services.replicas` tasks), the
canary (`canary.replicas`) in canary mode, and one nginx task on this node; OPA is a supervised process on this
node's 127.0.0.1 (runtime/opa_service.py, as on the local runtime), where no task can reach it.

- Converging: `docker stack deploy --resolve-image never` (no registry is asked: every node must hold the images):
  `deploy` of the whole generated file with `--prune`; a track change of a stack file with that one service (so a
  manifest edit to the other track is not slipped in, as `compose up --no-deps` on docker), never pruned (the
  canary leaves by `docker service rm` once nginx no longer routes to it). A service is healthy when as many tasks
  as it asks for run its current spec on nodes that are up (Swarm marks a task with a healthcheck running only once
  it passed) and no update is in progress.
- nginx follows the tasks by itself: the tracks are dnsrr names it resolves every second (render/nginx.py,
  `NginxTarget.swarm`); a graceful reload (the docker runtime's RELOAD_SCRIPT through `docker exec -i` into the
  nginx task's container on this node) changes weights and the handover of `promote stable`.
- Every replica is read on its own: `task_urls` lists the running tasks' addresses on the stack's network, and the
  admin listener (a unix socket in the state folder, `runtime.admin_socket`) proxies `/task/<address>/...` to one.
- The engine is read with the docker SDK (`swarm.docker_host`, else DOCKER_HOST, else the local socket); the docker
  CLI runs `stack deploy`, `exec` and `service logs`.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import OperationFailed, RuntimeUnavailable
from ..render.compose import NGINX_SERVICE
from ..render.stack import NGINX_ROOT_USER, STACK_FILE, STACK_LABEL
from .base import LogLine, Progress, ServiceHealth, ServiceInfo, Track, _noop, expected_services, role_of, service_of
from .base import wait_until_healthy as _wait_until_healthy
from .docker import DockerRuntime, connect, engine_address, engine_reason, stop_stream

if TYPE_CHECKING:
    from ..manifest import Manifest

OPA = "opa"
# UpdateStatus states while Swarm is still replacing (or has stopped replacing) a service's tasks.
UPDATING = ("updating", "paused", "rollback_started", "rollback_paused")
STOP_WAIT = 60.0  # seconds `docker service rm` / `docker stack rm` get to take their tasks away


# --- pure command builders -----------------------------------------------------------------------------------


def docker_base(docker_cli: str, host: str | None) -> list[str]:
    return [docker_cli, *(["-H", host] if host else [])]


def deploy_argv(base: Sequence[str], stack_file: str, project: str, *, prune: bool = False) -> list[str]:
    # --resolve-image never: no registry is reachable (and none is needed): every node holds the images.
    argv = [*base, "stack", "deploy", "--resolve-image", "never", "-c", stack_file]
    return [*argv, *(["--prune"] if prune else []), project]


def stack_rm_argv(base: Sequence[str], project: str) -> list[str]:
    return [*base, "stack", "rm", project]


def service_logs_argv(base: Sequence[str], service: str, tail: int, follow: bool) -> list[str]:
    return [*base, "service", "logs", "--no-trunc", "--tail", str(tail), *(["--follow"] if follow else []), service]


def full_name(m: Manifest, service: str) -> str:
    """The swarm service of a stack service: `<project>_<service>`."""
    return f"{m.project_name}_{service}"


# --- reading the engine (take a client so tests pass a fake) -----------------------------------------------------


@dataclass
class TaskView:
    """One task of a service as swiftdeploy needs it."""

    id: str
    slot: int | None
    node: str  # the node's host name (its id when unknown)
    node_up: bool
    state: str  # running, starting, pending, failed, ...
    current: bool  # runs the service's current spec (image and environment)
    address: str | None  # IPv4 on the stack's network
    container: str | None
    since: str  # Status.Timestamp
    message: str

    @property
    def serving(self) -> bool:
        return self.state == "running" and self.node_up and self.current


@dataclass
class ServiceView:
    name: str  # the stack service name ("app", "nginx")
    want: int
    tasks: list[TaskView]
    update: str | None  # UpdateStatus.State
    version: str | None
    image: str | None

    @property
    def serving(self) -> list[TaskView]:
        return [t for t in self.tasks if t.serving]

    @property
    def healthy(self) -> bool:
        return len(self.serving) >= self.want and self.update not in UPDATING

    def summary(self) -> str:
        """ "3/3 tasks running (manager ×2, worker-1)"; then what each other task is doing."""
        nodes = Counter(t.node for t in self.serving)
        where = ", ".join(f"{n} ×{c}" if c > 1 else n for n, c in sorted(nodes.items()))
        text = f"{len(self.serving)}/{self.want} tasks running" + (f" ({where})" if where else "")
        if self.update in UPDATING:
            text += f"; update {self.update.replace('_', ' ')}"
        others = [t for t in self.tasks if not t.serving]
        for t in others[:4]:
            why = "node down" if not t.node_up else "the previous spec" if not t.current else t.message or t.state
            text += f"; .{t.slot or '?'} on {t.node}: {t.state}" + (f" ({why})" if why != t.state else "")
        return text[:500]


def _env(spec: dict[str, Any]) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in (spec.get("Env") or []) if isinstance(e, str))


def service_views(client: Any, m: Manifest) -> dict[str, ServiceView]:
    """Every service of the stack, by its stack name, with its tasks that should be running."""
    nodes = {
        n.id: ((n.attrs.get("Description") or {}).get("Hostname") or n.id[:12], (n.attrs.get("Status") or {}))
        for n in client.nodes.list()
    }
    prefix = f"{m.project_name}_"
    views: dict[str, ServiceView] = {}
    for svc in client.services.list(filters={"label": f"{STACK_LABEL}={m.project_name}"}):
        spec = svc.attrs.get("Spec") or {}
        name = str(spec.get("Name") or svc.name)
        short = name[len(prefix) :] if name.startswith(prefix) else name
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        want = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))
        tasks = []
        for task in svc.tasks(filters={"desired-state": "running"}):
            status = task.get("Status") or {}
            node, node_status = nodes.get(task.get("NodeID", ""), (str(task.get("NodeID", "?"))[:12], {}))
            tspec = (task.get("Spec") or {}).get("ContainerSpec") or {}
            tasks.append(
                TaskView(
                    id=str(task.get("ID", "")),
                    slot=task.get("Slot"),
                    node=node,
                    node_up=node_status.get("State") == "ready",
                    state=str(status.get("State", "unknown")),
                    current=tspec.get("Image") == container.get("Image") and _env(tspec) == _env(container),
                    address=_address(task, m.network.name),
                    container=(status.get("ContainerStatus") or {}).get("ContainerID"),
                    since=str(status.get("Timestamp") or ""),
                    message=str(status.get("Err") or status.get("Message") or "")[:200],
                )
            )
        tasks.sort(key=lambda t: (t.slot or 0, t.id))
        env = _env(container)
        views[short] = ServiceView(
            short, want, tasks, (svc.attrs.get("UpdateStatus") or {}).get("State"), env.get("APP_VERSION"),
            container.get("Image"),
        )  # fmt: skip
    return views


def _address(task: dict[str, Any], network: str) -> str | None:
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") != network:
            continue
        for address in attachment.get("Addresses") or []:
            return str(address).split("/", 1)[0]
    return None


# --- the runtime -------------------------------------------------------------------------------------------------


class SwarmRuntime(DockerRuntime):
    name = "swarm"

    def __init__(self, *, client_factory: Callable[[], Any] | None = None, docker_cli: str | None = None, **kw: Any):
        super().__init__(client_factory=client_factory, **kw)
        self._docker_cli = docker_cli
        from .local import LocalRuntime

        self._local = LocalRuntime()  # OPA: the supervised process (pid file, log) in the state folder

    # plumbing
    def engine(self, m: Manifest) -> Any:
        """The SDK client of the manager; RuntimeUnavailable unless it answers and is a swarm manager."""
        if self._client is not None:
            return self._client
        host = m.swarm.docker_host
        if self._client_factory is None and host:
            import docker

            self._client_factory = lambda: docker.DockerClient(base_url=host, timeout=30)
        try:
            client = connect(self._client_factory)
        except RuntimeUnavailable as exc:
            # connect() names DOCKER_HOST (or the local socket) and suggests runtime: local: name the manager's
            # engine that was asked (swarm.docker_host) and the swarm fix instead.
            reason = exc.message.partition(f" at {engine_address()}: ")[2] or exc.message
            raise RuntimeUnavailable(
                f"no Docker engine answers at {host or engine_address()}: {reason}",
                hint="start the manager's Docker engine, or set swarm.docker_host to a manager's engine",
            ) from None
        try:
            swarm = client.info().get("Swarm") or {}
        except Exception as exc:  # noqa: BLE001 - any SDK failure is "the engine does not answer"
            raise RuntimeUnavailable(f"the Docker engine does not answer: {engine_reason(exc)}") from None
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            state = swarm.get("LocalNodeState") or "inactive"
            raise RuntimeUnavailable(
                f"the Docker engine at {host or os.environ.get('DOCKER_HOST') or 'the local socket'} is not a swarm "
                f"manager (swarm state: {state})",
                hint="run swiftdeploy on a manager (`docker swarm init` makes this engine one), or set "
                "swarm.docker_host to a manager's engine",
            )
        self._client = client
        self._node_id = str(swarm.get("NodeID") or "")
        return client

    def client(self) -> Any:  # DockerRuntime's helpers call client(); always bound by engine(m) first
        if self._client is None:
            raise RuntimeUnavailable("no engine: SwarmRuntime.engine(m) was not called")
        return self._client

    def cli(self, m: Manifest) -> list[str]:
        if self._docker_cli is None:
            found = shutil.which("docker")
            if found is None:
                raise RuntimeUnavailable(
                    "the docker CLI is not installed (the swarm runtime runs `docker stack deploy`)",
                    hint="install the docker.io (or docker-ce-cli) package",
                )
            self._docker_cli = found
        return docker_base(self._docker_cli, m.swarm.docker_host)

    def _commands(self, m: Manifest) -> tuple[str, str]:
        return f"docker stack ps {m.project_name}", f"docker service logs {full_name(m, NGINX_SERVICE)}"

    def views(self, m: Manifest) -> dict[str, ServiceView]:
        from docker.errors import DockerException

        client = self.engine(m)
        try:
            return service_views(client, m)
        except DockerException as exc:
            raise RuntimeUnavailable(f"reading the stack from the swarm manager failed: {engine_reason(exc)}") from None

    def _deploy(self, m: Manifest, progress: Progress, *, only: str | None = None) -> None:
        """`docker stack deploy`: of the generated file with --prune (the whole stack converges, a service the file
        no longer has goes), or of a stack file with the one service `only` (render_stack's `only`, written in the
        state folder), so that changing one track leaves every other service exactly as it runs."""
        from ..fsutil import atomic_write
        from ..render.stack import nginx_user, render_stack

        self._admin_dir(m)
        if only is None:
            stack_file = m.out_dir / STACK_FILE
        else:
            stack_file = m.state_dir / f"stack.{only}.yml"
            atomic_write(stack_file, render_stack(m, nginx_user=nginx_user(), only=only))
        progress(f"docker stack deploy {m.project_name}" + (f" ({only} only)" if only else ""))
        argv = deploy_argv(self.cli(m), str(stack_file), m.project_name, prune=only is None)
        self._exec(argv, timeout=180, what="docker stack deploy", hint=f"see `{self._commands(m)[0]}`")

    @staticmethod
    def _admin_dir(m: Manifest) -> None:
        """The folder nginx creates its admin socket in (bind-mounted into its task): ours, private, and writable
        by the user nginx runs as (render/stack.py nginx_user)."""
        from . import admin_socket

        folder = admin_socket(m).parent
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if os.geteuid() == 0:
            uid, gid = (int(x) for x in NGINX_ROOT_USER.split(":"))
            os.chown(folder, uid, gid)

    def _wait(self, m: Manifest, services: Sequence[str], timeout: float) -> None:
        self.wait_healthy(m, list(services), timeout)

    # protocol
    def up(self, m: Manifest, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        nginx = self.views(m).get(NGINX_SERVICE)
        self._deploy(m, progress)  # a full converge: a canary the file no longer has goes too
        progress("waiting for every task")
        self._wait(m, expected_services(m), timeout)
        if nginx is not None and nginx.serving:
            # A running nginx keeps its config until it is reloaded (the stack file did not change its spec).
            progress("reloading nginx")
            self.reload_proxy(m)

    def start_policy_engine(self, m: Manifest, *, timeout: float = 30.0, progress: Progress = _noop) -> None:
        from . import opa_service

        opa_service.start(self._local, m, timeout=timeout, progress=progress)

    def start_track(self, m: Manifest, track: Track, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        service = service_of(m, track)
        self._deploy(m, progress, only=service)
        progress(f"waiting for {service}'s tasks")
        self._wait(m, [service], timeout)

    def stop_track(self, m: Manifest, track: Track) -> None:
        from docker.errors import APIError, NotFound

        client = self.engine(m)
        name = full_name(m, service_of(m, track))
        try:
            client.services.get(name).remove()
        except NotFound:
            return
        except APIError as exc:
            raise OperationFailed(
                f"removing {name} failed: {exc.explanation or exc}",
                hint=f"remove it by hand: `docker service rm {name}`",
            ) from None
        self._until(lambda: not self._tasks_of(client, name), STOP_WAIT)

    @staticmethod
    def _tasks_of(client: Any, service: str) -> list[Any]:
        """The tasks a removed service still has (none once the manager forgot the service)."""
        from docker.errors import NotFound

        try:
            return list(client.api.tasks(filters={"service": service}))
        except NotFound:
            return []

    @staticmethod
    def _until(done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True

    def reload_proxy(self, m: Manifest, *, all_to_canary: bool = False, weight: int | None = None) -> None:
        """Graceful reload of the nginx task on this node (module docstring); a missing nginx is deployed first."""
        from ..render import NginxTarget, render_nginx

        on_disk = m
        if weight is not None:
            m = m.with_canary_weight(weight)
        target = NginxTarget.swarm(m)
        if all_to_canary:
            target = target.all_to_canary()
        text = render_nginx(m, target)
        container = self._nginx_container(m)
        if container is None:
            self._deploy(m, _noop, only=NGINX_SERVICE)
            self._wait(m, [NGINX_SERVICE], 60)
            container = self._nginx_container(m)
            if container is None:
                raise OperationFailed("nginx's task does not run on this node", hint=self._placement_hint(m))
            if not (all_to_canary or m is not on_disk):  # the new task runs the file on disk
                return
        done = self._pipe_to_nginx(m, [*self.cli(m), "exec", "-i", container], target, text)
        self._check_reload(m, done)

    def _nginx_container(self, m: Manifest) -> str | None:
        """The container of the nginx task running on this node (None when there is none)."""
        view = self.views(m).get(NGINX_SERVICE)
        here = self._nginx_here(m, view)
        return here.container if here else None

    def _nginx_here(self, m: Manifest, view: ServiceView | None) -> TaskView | None:
        if view is None:
            return None
        me = self._node_name(m)
        running = [t for t in view.tasks if t.state == "running" and t.container]
        mine = [t for t in running if t.node == me]
        if running and not mine:
            raise OperationFailed(
                f"nginx's task runs on {running[0].node}, not on this node ({me})", hint=self._placement_hint(m)
            )
        return mine[0] if mine else None

    def _node_name(self, m: Manifest) -> str:
        client = self.engine(m)
        node = client.nodes.get(self._node_id)
        return str((node.attrs.get("Description") or {}).get("Hostname") or self._node_id[:12])

    @staticmethod
    def _placement_hint(m: Manifest) -> str:
        return (
            "nginx must run on the manager swiftdeploy runs on (it mounts nginx.conf and the admin socket from "
            "here): pin it with swarm.nginx_constraints, e.g. `node.hostname == <this host>`, and run `swiftdeploy "
            "deploy`"
        )

    def down(self, m: Manifest) -> list[str]:
        client = self.engine(m)
        before = sorted(self.views(m))
        if before:
            self._exec(stack_rm_argv(self.cli(m), m.project_name), timeout=120, what="docker stack rm")
        label = {"label": f"{STACK_LABEL}={m.project_name}"}
        gone = self._until(
            lambda: not client.services.list(filters=label) and not client.networks.list(filters=label), STOP_WAIT
        )
        lines = [f"{service}: removed" for service in before]
        if not gone:
            lines.append(f"the stack's tasks or network were still going after {STOP_WAIT:g} s (`docker stack ps`)")
        return lines + self._local.down(m)  # OPA

    def health(self, m: Manifest) -> dict[str, ServiceHealth]:
        result: dict[str, ServiceHealth] = {}
        for name, view in self.views(m).items():
            healthy = view.healthy
            detail = view.summary()
            if name == NGINX_SERVICE and healthy:
                healthy, detail = self._admin_answers(m, detail)
            result[name] = ServiceHealth(
                name, bool(view.serving), healthy, detail, version=view.version if name != NGINX_SERVICE else None,
                image=view.image if name != NGINX_SERVICE else None,
            )  # fmt: skip
        opa = self._local.health(m).get(OPA)
        if opa is not None:
            result[OPA] = opa
        return result

    @staticmethod
    def _admin_answers(m: Manifest, detail: str) -> tuple[bool, str]:
        """nginx is healthy when its admin socket answers (any HTTP answer: 404 for `/`)."""
        from ..localhttp import NoAnswer, fetch
        from ..metrics.scrape import admin_base

        try:
            fetch("GET", f"{admin_base(m)}/", timeout=2.0, limit=4096)
        except NoAnswer as exc:
            return False, f"{detail}; the admin socket does not answer: {exc}"
        return True, detail

    def wait_healthy(self, m: Manifest, services: list[str], timeout: float, *, interval: float = 1.0) -> None:
        def hint(service: str) -> str:
            return f"see `docker service ps {full_name(m, service)}` and `docker service logs {full_name(m, service)}`"

        _wait_until_healthy(self, m, services, timeout, interval=interval, fail_fast=False, hint=hint)

    def logs_tail(self, m: Manifest, service: str, n: int = 20) -> list[str]:
        if service == OPA:
            return self._local.logs_tail(m, OPA, n)
        try:
            return self._service_logs(service_logs_argv(self.cli(m), full_name(m, service), n, False))[-n:]
        except (OperationFailed, RuntimeUnavailable):
            return []

    def _service_logs(self, argv: list[str]) -> list[str]:
        """`docker service logs` without --follow: the tasks' stdout and stderr streams, as one (apps log to
        stderr: uvicorn does)."""
        try:
            done = self._run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                             timeout=60, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"`{' '.join(argv)}` did not finish in 60 s") from None
        except OSError as exc:
            raise RuntimeUnavailable(f"docker service logs: cannot run {argv[0]}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            raise self._failed(done, "docker service logs")
        return (done.stdout or "").splitlines()

    def services(self, m: Manifest) -> list[ServiceInfo]:
        """`ps`: a row per service (its tasks summed up in `detail`: how many run where), the supervised OPA."""
        now = datetime.now(UTC)
        found: dict[str, ServiceInfo] = {}
        for name, view in self.views(m).items():
            serving = view.serving
            state = "running" if len(serving) >= view.want else f"running {len(serving)}/{view.want}"
            if not serving:
                state = view.tasks[0].state if view.tasks else "no task"
            uptime = None
            starts = [t.since for t in serving if t.since]
            if starts:
                try:
                    uptime = max(
                        0.0, (now - datetime.fromisoformat(min(starts)[:26].rstrip("Z") + "+00:00")).total_seconds()
                    )
                except ValueError:
                    uptime = None
            found[name] = ServiceInfo(
                service=name,
                role=role_of(m, name),
                state=state,
                health=("healthy" if view.healthy else "degraded") if serving else "-",
                container=full_name(m, name),
                ports=[m.nginx.port] if name == NGINX_SERVICE else [],
                version=view.version if name != NGINX_SERVICE else None,
                uptime_seconds=uptime,
                detail=view.summary(),
            )
        for info in self._local.services(m):
            if info.service == OPA and info.state != "absent":
                found[OPA] = info
        return [
            found.get(name) or ServiceInfo(name, role_of(m, name), "absent", "-", detail="no service")
            for name in dict.fromkeys([*expected_services(m), *found])
        ]

    def logs(self, m: Manifest, services: Sequence[str], *, tail: int = 100, follow: bool = False) -> Iterator[LogLine]:
        """`docker service logs` of each named service (every service of the stack when empty), each line naming
        its task and node; with `follow`, merged as they come until the consumer stops."""
        names = list(services) or list(dict.fromkeys([*expected_services(m), *self.views(m)]))
        if OPA in names:
            names.remove(OPA)
            yield from self._local.logs(m, [OPA], tail=tail, follow=False)
        argvs = [service_logs_argv(self.cli(m), full_name(m, name), tail, follow) for name in names]
        if not follow:
            for argv in argvs:
                for line in self._service_logs(argv):
                    yield LogLine(line)
            return
        yield from _follow_all(self._popen, argvs)

    # metrics
    def task_urls(self, m: Manifest, track: Track, what: str) -> dict[str, str]:
        """Admin URL of `what` (metrics, healthz, chaos) for every running task of a track, by task
        ("app-canary.2@worker-1 <task id>"). OperationFailed when the track has no running task."""
        from ..metrics.scrape import admin_base

        service = service_of(m, track)
        view = self.views(m).get(service)
        tasks = [t for t in (view.tasks if view else []) if t.state == "running" and t.address]
        if not tasks:
            raise OperationFailed(
                f"the {track} track ({service}) has no running task",
                hint=f"see `docker service ps {full_name(m, service)}`",
            )
        base = admin_base(m)
        return {f"{service}.{t.slot}@{t.node} {t.id[:12]}": f"{base}/task/{t.address}/{what}" for t in tasks}


def _follow_all(popen: Callable[..., Any], argvs: list[list[str]]) -> Iterator[LogLine]:
    """Lines of several `docker service logs --follow` processes as they come; all stopped when done."""
    lines: queue.Queue[str | None] = queue.Queue(maxsize=10000)
    procs = []
    try:
        for argv in argvs:
            try:
                proc = popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
            except OSError as exc:
                raise RuntimeUnavailable(f"docker service logs: cannot run {argv[0]}: {exc.strerror or exc}") from None
            procs.append(proc)
            threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        open_streams = len(procs)
        while open_streams:
            line = lines.get()
            if line is None:
                open_streams -= 1
                continue
            yield LogLine(line)
    finally:
        for proc in procs:
            stop_stream(proc)


def _pump(proc: Any, lines: queue.Queue[str | None]) -> None:
    try:
        for line in proc.stdout:
            lines.put(line.rstrip("\n")[:65536])
    finally:
        lines.put(None)
