"""The runtime registry (swiftdeploy.runtime.RUNTIMES): the manifest, the port rules, the engine choice and
get_runtime all read it, and `import swiftdeploy.runtime` stays light."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing

import pytest

from swiftdeploy.errors import ManifestError
from swiftdeploy.manifest import parse_manifest
from swiftdeploy.manifest.model import RuntimeName
from swiftdeploy.policy import asks_opa_server
from swiftdeploy.runtime import RUNTIMES, Runtime, get_runtime, port_claims, runtime_spec


def manifest(runtime: str, extra: str = "") -> typing.Any:
    return parse_manifest(f"services: {{image: demo:1, port: 3000}}\nruntime: {runtime}\n{extra}")


def protocol_methods() -> set[str]:
    return {name for name, _ in inspect.getmembers(Runtime, inspect.isfunction) if not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_every_registered_runtime_is_built_from_its_spec(name: str) -> None:
    m = manifest(name)
    runtime = get_runtime(m)
    assert runtime.name == name and runtime_spec(m) is RUNTIMES[name]
    assert {"up", "down", "health", "wait_healthy", "start_policy_engine"} <= protocol_methods()
    missing = [method for method in protocol_methods() if not callable(getattr(runtime, method, None))]
    assert missing == []


def test_the_manifest_accepts_exactly_the_registered_runtimes() -> None:
    assert typing.get_args(RuntimeName) == tuple(RUNTIMES)
    with pytest.raises(ManifestError) as info:
        manifest("kubernetes")  # not a registered runtime
    assert all(f"'{name}'" in str(info.value) for name in RUNTIMES)


def test_port_rules_follow_the_spec(monkeypatch, tmp_path) -> None:
    from swiftdeploy.policy import server

    monkeypatch.setenv("PATH", str(tmp_path))  # no OPA binary: the local runtime runs no OPA service
    monkeypatch.setattr(server, "TOOLS_OPA", tmp_path / "no-opa")
    docker = {c.field: c for c in port_claims(manifest("docker"))}
    assert docker["nginx.port"].host == "0.0.0.0" and docker["nginx.admin_port"].host == "127.0.0.1"
    assert docker["opa.port"].must_be_free  # the stack runs its own OPA there
    assert "services.port" not in docker  # the app listens inside its container
    local = {c.field: c for c in port_claims(manifest("local"))}
    assert local["nginx.port"].host == "127.0.0.1"
    assert not local["opa.port"].must_be_free  # no binary: an OPA there is the person's own server
    # the local apps' four fixed ports (stable and canary, each with its blue/green twin), bound by validate
    apps = [(c.field, c.what, c.port, c.must_be_free) for c in port_claims(manifest("local")) if "services" in c.field]
    assert apps == [
        ("services.port", "stable app", 3000, True),
        ("services.port + 1", "canary app", 3001, True),
        ("services.port + 2", "stable app, next", 3002, True),
        ("services.port + 3", "canary app, next", 3003, True),
    ]
    assert "opa.port" not in {c.field for c in port_claims(manifest("local", "policy: {engine: embedded}\n"))}


def test_the_manifest_keeps_the_claimed_ports_distinct() -> None:
    clash = "nginx: {port: 3000, admin_port: 3001}\n"
    assert manifest("docker", clash).nginx.port == 3000  # the docker app's port is inside its container
    with pytest.raises(ManifestError, match="services.port and nginx.port are both 3000"):
        manifest("local", clash)


def test_the_local_app_ports_stay_distinct_and_in_range() -> None:
    def at(port: int, runtime: str = "local") -> typing.Any:
        return parse_manifest(f"services: {{image: demo:1, port: {port}}}\nruntime: {runtime}\n")

    with pytest.raises(ManifestError, match=r"services.port \+ 2 and nginx.port are both 8080"):
        at(8078)
    with pytest.raises(ManifestError, match=r"services.port must be at most 65532 on the local runtime"):
        at(65533)
    assert at(65532).services.port == 65532
    assert at(65535, "docker").services.port == 65535  # inside its container: one port


def test_auto_asks_an_opa_server_only_where_the_runtime_runs_one(monkeypatch, tmp_path) -> None:
    from swiftdeploy.policy import server

    for name in RUNTIMES:
        assert asks_opa_server(manifest(name, "policy: {engine: opa}\n"))
        assert not asks_opa_server(manifest(name, "policy: {engine: embedded}\n"))
    assert asks_opa_server(manifest("docker"))  # the compose stack always has an OPA service
    # The local runtime runs OPA as a process when it finds a binary (policy/server.py), and only then.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(server, "TOOLS_OPA", tmp_path / "no-opa")
    assert not asks_opa_server(manifest("local"))
    fake = tmp_path / "opa"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert asks_opa_server(manifest("local"))


def test_the_registry_imports_nothing_heavy() -> None:
    code = (
        "import json, sys, swiftdeploy.runtime\n"
        "heavy = ['psutil', 'docker', 'httpx', 'pydantic', 'typer', 'rich']\n"
        "print(json.dumps([n for n in heavy if any(m == n or m.startswith(n + '.') for m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
