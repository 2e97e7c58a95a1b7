"""Swarm runtime: the exact docker CLI command lines, and how the engine's answers (services, tasks, nodes) become
health, `ps` rows and per-replica URLs, against a fake SDK client shaped like the Engine API's answers.

The real cluster (several engines in network namespaces, the whole story through the CLI) is `make e2e-swarm`
(docs/swarm.md); the generated files and nginx's behaviour are tested with the real nginx in test_swarm_nginx.py.
"""

from __future__ import annotations

import subprocess
from urllib.parse import quote

import pytest

from swiftdeploy.errors import OperationFailed, RuntimeUnavailable
from swiftdeploy.manifest import parse_manifest
from swiftdeploy.render import NginxTarget, render_nginx
from swiftdeploy.render.stack import STACK_LABEL
from swiftdeploy.runtime import admin_socket
from swiftdeploy.runtime import swarm as sw

DOCKER = "/usr/bin/docker"
PROJECT = "shop"
STABLE_ENV = ["MODE=stable", "APP_VERSION=1.0.0"]


@pytest.fixture
def manifest(tmp_path):
    text = (
        "runtime: swarm\nproject: shop\nservices: {name: api, image: acme/api:1.0, replicas: 3, mode: canary}\n"
        "canary: {image: acme/api:2.0, version: 2.0.0, replicas: 2, weight: 20}\npolicy: {engine: embedded}\n"
    )
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return parse_manifest(text).with_source(path, "0" * 64)


def _task(tid, slot, node, state="running", image="acme/api:1.0", env=None, address="10.0.1.5", container="c1"):
    return {
        "ID": tid,
        "Slot": slot,
        "NodeID": node,
        "DesiredState": "running",
        "Status": {
            "State": state,
            "Timestamp": "2026-12-01T10:00:00.123456789Z",
            "ContainerStatus": {"ContainerID": container},
        },
        "Spec": {"ContainerSpec": {"Image": image, "Env": STABLE_ENV if env is None else env}},
        "NetworksAttachments": [
            {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.255.0.9/16"]},
            {"Network": {"Spec": {"Name": "swiftdeploy-net"}}, "Addresses": [f"{address}/24"]},
        ],
    }


class FakeService:
    def __init__(self, name, replicas, image, env, tasks, update=None):
        self.name = f"{PROJECT}_{name}"
        self.attrs = {
            "Spec": {
                "Name": self.name,
                "Labels": {STACK_LABEL: PROJECT},
                "Mode": {"Replicated": {"Replicas": replicas}},
                "TaskTemplate": {"ContainerSpec": {"Image": image, "Env": env}},
            }
        }
        if update:
            self.attrs["UpdateStatus"] = {"State": update}
        self._tasks = tasks
        self.removed = False

    def tasks(self, filters=None):
        assert filters == {"desired-state": "running"}
        return self._tasks

    def remove(self):
        self.removed = True


class FakeNode:
    def __init__(self, nid, host, state="ready"):
        self.id = nid
        self.attrs = {"Description": {"Hostname": host}, "Status": {"State": state}}


class FakeClient:
    def __init__(self, services, nodes, swarm=None):
        self._services = services
        self._nodes = nodes
        self._swarm = swarm or {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n1"}
        self.api = self
        self.task_calls = 0
        self.nodes = self
        self.services = self

    def ping(self):
        return True

    def info(self):
        return {"Swarm": self._swarm}

    # nodes.list / services.list share `list` (the fake is both collections)
    def list(self, filters=None):
        if filters is None:
            return self._nodes
        assert filters == {"label": f"{STACK_LABEL}={PROJECT}"}
        return self._services

    def get(self, key):
        from docker.errors import NotFound

        for node in self._nodes:
            if node.id == key:
                return node
        for svc in self._services:
            if svc.name == key:
                return svc
        raise NotFound(key)

    def tasks(self, filters=None):  # api.tasks after a service rm: the engine forgets the service (404) at last
        from docker.errors import NotFound

        self.task_calls += 1
        if self.task_calls > 1:
            raise NotFound("service sdl_app-canary not found")
        return [{"ID": "t"}]


CANARY_ENV = ["MODE=canary", "APP_VERSION=2.0.0"]


def _cluster(*, worker_state="ready", canary_update=None):
    stable = FakeService(
        "api",
        3,
        "acme/api:1.0",
        STABLE_ENV,
        [
            _task("s1aaaaaaaaaaaa", 1, "n1", address="10.0.1.2"),
            _task("s2bbbbbbbbbbbb", 2, "n2", address="10.0.1.3"),
            _task("s3cccccccccccc", 3, "n2", address="10.0.1.4"),
        ],
    )
    canary = FakeService(
        "api-canary",
        2,
        "acme/api:2.0",
        CANARY_ENV,
        [
            _task("c1dddddddddddd", 1, "n1", image="acme/api:2.0", env=CANARY_ENV, address="10.0.1.7"),
            # still the previous spec: an update replaces it
            _task("c2eeeeeeeeeeee", 2, "n2", image="acme/api:1.9", env=CANARY_ENV, address="10.0.1.8"),
        ],
        update=canary_update,
    )
    nginx = FakeService(
        "nginx",
        1,
        "nginx:1.27",
        [],
        [_task("n0ffffffffffff", 1, "n1", image="nginx:1.27", env=[], container="nginxcid")],
    )
    nginx.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] = []
    return FakeClient([stable, canary, nginx], [FakeNode("n1", "manager"), FakeNode("n2", "worker-1", worker_state)])


class Recorder:
    def __init__(self, returncode=0, stdout="reloaded in 3/10 s\n"):
        self.calls = []
        self.returncode = returncode
        self.stdout = stdout

    def __call__(self, argv, **kw):
        self.calls.append((argv, kw))
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, "")


def _runtime(client, run=None):
    return sw.SwarmRuntime(client_factory=lambda: client, docker_cli=DOCKER, run=run or Recorder())


def test_command_lines_are_exact():
    base = sw.docker_base(DOCKER, "unix:///run/mgr.sock")
    assert base == [DOCKER, "-H", "unix:///run/mgr.sock"]
    assert sw.deploy_argv(base, "/srv/docker-stack.yml", "shop") == [
        *base, "stack", "deploy", "--resolve-image", "never", "-c", "/srv/docker-stack.yml", "shop",
    ]  # fmt: skip
    assert sw.deploy_argv([DOCKER], "f.yml", "shop", prune=True)[-2:] == ["--prune", "shop"]
    assert sw.stack_rm_argv([DOCKER], "shop") == [DOCKER, "stack", "rm", "shop"]
    assert sw.service_logs_argv([DOCKER], "shop_api", 20, True) == [
        DOCKER, "service", "logs", "--no-trunc", "--tail", "20", "--follow", "shop_api",
    ]  # fmt: skip


def test_views_count_only_current_tasks_on_nodes_that_are_up(manifest):
    views = sw.service_views(_cluster(worker_state="down"), manifest)
    assert set(views) == {"api", "api-canary", "nginx"}
    stable = views["api"]
    assert [t.node for t in stable.serving] == ["manager"]  # the two on the lost worker do not serve
    assert not stable.healthy
    assert stable.summary().startswith("1/3 tasks running (manager)")
    assert "on worker-1: running (node down)" in stable.summary()
    canary = views["api-canary"]
    assert [t.address for t in canary.serving] == ["10.0.1.7"]
    assert canary.version == "2.0.0" and canary.image == "acme/api:2.0"


def test_healthy_needs_every_replica_and_no_update_in_progress(manifest):
    views = sw.service_views(_cluster(), manifest)
    assert views["api"].healthy and views["api"].summary() == "3/3 tasks running (manager, worker-1 ×2)"
    assert not views["api-canary"].healthy  # 1 of 2 on the current spec
    assert "on worker-1: running (the previous spec)" in views["api-canary"].summary()
    updating = sw.service_views(_cluster(canary_update="updating"), manifest)["api-canary"]
    assert "update updating" in updating.summary()


def test_not_a_manager_is_one_clear_error(manifest):
    client = _cluster()
    client._swarm = {"LocalNodeState": "inactive", "ControlAvailable": False}
    with pytest.raises(RuntimeUnavailable) as info:
        _runtime(client).health(manifest)
    assert "is not a swarm manager (swarm state: inactive)" in info.value.message
    assert "docker swarm init" in info.value.hint


def test_task_urls_name_every_running_replica(manifest):
    urls = _runtime(_cluster()).task_urls(manifest, "stable", "metrics")
    base = "http+unix://" + quote(str(admin_socket(manifest)), safe="")
    assert urls == {
        "api.1@manager s1aaaaaaaaaa": f"{base}/task/10.0.1.2/metrics",
        "api.2@worker-1 s2bbbbbbbbbb": f"{base}/task/10.0.1.3/metrics",
        "api.3@worker-1 s3cccccccccc": f"{base}/task/10.0.1.4/metrics",
    }
    # A task on a lost node is still listed: reading it fails, so no gate decides on a track it cannot see.
    assert len(_runtime(_cluster(worker_state="down")).task_urls(manifest, "stable", "metrics")) == 3


def test_task_urls_without_a_running_task_fail(manifest):
    client = _cluster()
    client._services[1]._tasks = [_task("c9", 1, "n1", state="starting")]
    with pytest.raises(OperationFailed, match=r"the canary track \(api-canary\) has no running task"):
        _runtime(client).task_urls(manifest, "canary", "metrics")


def test_reload_pipes_the_weighted_config_into_the_nginx_task_here(manifest):
    run = Recorder()
    _runtime(_cluster(), run).reload_proxy(manifest, weight=50)
    ((argv, kw),) = run.calls
    assert argv[:5] == [DOCKER, "exec", "-i", "nginxcid", "sh"]
    assert argv[-4:] == ["reload", "/tmp/swiftdeploy/nginx.conf", "/tmp/nginx.pid", "35"]
    assert kw["input"] == render_nginx(manifest.with_canary_weight(50), NginxTarget.swarm(manifest))
    assert "50% canary;" in kw["input"]


def test_reload_refused_by_nginx_is_an_error_naming_the_service_commands(manifest):
    run = Recorder(returncode=2, stdout="")
    with pytest.raises(OperationFailed) as info:
        _runtime(_cluster(), run).reload_proxy(manifest)
    assert "nginx keeps serving the previous one" in info.value.message
    assert "docker stack ps shop" in info.value.hint


def test_nginx_on_another_node_is_refused_with_the_placement_fix(manifest):
    client = _cluster()
    client._services[2]._tasks = [_task("n0", 1, "n2", image="nginx:1.27", env=[], container="elsewhere")]
    run = Recorder()
    with pytest.raises(OperationFailed) as info:
        _runtime(client, run).reload_proxy(manifest)
    assert "nginx's task runs on worker-1, not on this node (manager)" in info.value.message
    assert "swarm.nginx_constraints" in info.value.hint
    assert run.calls == []


def test_stop_track_removes_the_service_and_waits_for_its_tasks(manifest):
    client = _cluster()
    _runtime(client).stop_track(manifest, "canary")
    assert client._services[1].removed and client.task_calls == 2
    _runtime(client).stop_track(manifest.model_copy(update={"project": "other"}), "canary")  # absent: no error


def test_ps_rows_say_how_many_tasks_run_where(manifest):
    rows = {r.service: r for r in _runtime(_cluster(worker_state="down")).services(manifest)}
    assert rows["api"].state == "running 1/3" and rows["api"].health == "degraded"
    assert rows["api"].container == "shop_api" and rows["api"].version == "1.0.0"
    assert rows["nginx"].ports == [manifest.nginx.port] and rows["nginx"].role == "proxy"
    assert rows["api-canary"].role == "canary"
    assert rows["api"].uptime_seconds is not None


def test_nginx_is_unhealthy_while_its_admin_socket_does_not_answer(manifest):
    states = _runtime(_cluster()).health(manifest)
    assert states["api"].healthy and states["api"].version == "1.0.0"
    assert states["nginx"].running and not states["nginx"].healthy
    assert "the admin socket does not answer" in states["nginx"].detail


def test_a_track_change_deploys_that_service_alone(manifest):
    """`docker stack deploy` converges every service its file names: a track change deploys a file with that one
    service, so an edit to the other track in the manifest is not slipped in (compose's `up --no-deps`)."""
    from ruamel.yaml import YAML

    client = _cluster()
    client._services[1]._tasks[1] = _task("c2e", 2, "n2", image="acme/api:2.0", env=CANARY_ENV, address="10.0.1.8")
    run = Recorder()
    _runtime(client, run).start_track(manifest, "canary", timeout=5)
    ((argv, _kw),) = run.calls
    stack_file = manifest.state_dir / "stack.api-canary.yml"
    assert argv == sw.deploy_argv([DOCKER], str(stack_file), "shop")  # no --prune: the others stay
    stack = YAML(typ="safe").load(stack_file.read_text())
    assert list(stack["services"]) == ["api-canary"] and stack["services"]["api-canary"]["deploy"]["replicas"] == 2
    assert list(stack["networks"]) == ["swiftdeploy-net"]


def test_logs_read_the_tasks_stderr_too(manifest):
    run = Recorder(stdout="shop_api.1.x@manager | INFO: started\n")
    lines = list(_runtime(_cluster(), run).logs(manifest, ["api"], tail=5))
    ((argv, kw),) = run.calls
    assert argv == sw.service_logs_argv([DOCKER], "shop_api", 5, False)
    assert kw["stderr"] == subprocess.STDOUT  # uvicorn logs to stderr
    assert [line.text for line in lines] == ["shop_api.1.x@manager | INFO: started"]
