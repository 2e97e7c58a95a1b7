"""OPA as a service of the local runtime (runtime/opa_service.py), against the real binary, the real nginx and the
demo API on 127.0.0.1: deploy starts it beside the app and nginx and waits for /health before the gate, status and
history name it, teardown stops it; `auto` uses it when a binary is found and says once when there is none."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from support import stack_ports

from swiftdeploy.errors import OperationFailed, PolicyEngineUnavailable

SWIFTDEPLOY = str(Path(sys.executable).with_name("swiftdeploy"))
MANIFEST = """\
services: {{image: swift-deploy-1-node:latest, port: {app}, version: 1.0.0}}
canary: {{image: swift-deploy-1-node:next, version: 2.0.0}}
nginx: {{port: {public}, admin_port: {admin}}}
runtime: local
opa: {{port: {opa}{binary}}}
policy:
  engine: {engine}
  thresholds: {{max_cpu_load: 1000, min_disk_free_gb: 0.1, max_memory_used_percent: 100}}
"""


def write(folder: Path, engine: str, binary: str | None = None, opa_port: int | None = None) -> Path:
    app, public, admin, opa = stack_ports(3)  # app: services.port, the first of the local runtime's four
    path = folder / "manifest.yaml"
    path.write_text(
        MANIFEST.format(
            app=app,
            public=public,
            admin=admin,
            opa=opa_port or opa,
            engine=engine,
            binary=f", binary: {binary}" if binary else "",
        )
    )
    return path


def cli(manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [SWIFTDEPLOY, "-m", str(manifest), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


@pytest.fixture
def stack(tmp_path):
    """A folder for one stack; torn down afterwards whatever happened."""
    yield tmp_path
    manifest = tmp_path / "manifest.yaml"
    if manifest.exists() and any((tmp_path / ".swiftdeploy" / "pids").glob("*.json")):
        cli(manifest, "teardown")


def no_tools_opa(monkeypatch, tmp_path) -> None:
    """This process finds no OPA binary: nothing on PATH, no .tools/bin/opa."""
    import swiftdeploy.policy.server as server

    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}:{Path(sys.executable).parent}")
    monkeypatch.setattr(server, "TOOLS_OPA", tmp_path / "no-tools" / "opa")


def test_deploy_runs_opa_as_a_third_service_and_teardown_stops_it(opa_binary, stack) -> None:
    manifest = write(stack, "opa", binary=opa_binary)
    done = cli(manifest, "deploy")
    assert done.returncode == 0, done.stdout + done.stderr
    progress = done.stderr + done.stdout
    assert progress.index("starting opa on 127.0.0.1:") < progress.index("checking the host against the infra")
    record = json.loads((stack / ".swiftdeploy" / "pids" / "opa.json").read_text())
    opa = psutil.Process(record["pid"])
    argv = opa.cmdline()
    assert argv[0] == opa_binary and "--authorization=basic" in argv and "--skip-version-check" in argv
    assert argv[argv.index("--bundle") + 1] == str(stack / "policy-bundle")
    assert f"--addr=127.0.0.1:{record['port']}" in argv
    # Three separate services: the app and nginx are not OPA's children, nor OPA theirs.
    pids = {
        name: json.loads((stack / ".swiftdeploy" / "pids" / f"{name}.json").read_text())["pid"]
        for name in ("app", "nginx")
    }
    assert len({record["pid"], *pids.values()}) == 3 and opa.ppid() not in pids.values()
    gate = [r for r in history(stack) if r["event"] == "policy_decision"]
    assert [(r["domain"], r["engine"], r["verdict"]) for r in gate] == [("infrastructure", "opa", "allow")]

    status = cli(manifest, "status", "--json")
    assert status.returncode == 0, status.stderr
    snapshot = json.loads(status.stdout)
    assert snapshot["engines"] == ["opa"]
    assert "opa: healthy" in cli(manifest, "deploy").stdout  # a second deploy keeps the same OPA
    assert json.loads((stack / ".swiftdeploy" / "pids" / "opa.json").read_text())["pid"] == record["pid"]

    down = cli(manifest, "teardown")
    assert down.returncode == 0 and f"opa (pid {record['pid']}): stopped" in down.stdout
    assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE


def test_auto_uses_the_opa_it_finds(opa_binary, stack) -> None:
    from swiftdeploy.manifest import load_manifest
    from swiftdeploy.ops import deploy, teardown
    from swiftdeploy.policy import select_engine

    path = write(stack, "auto", binary=opa_binary)
    said: list[str] = []
    result = deploy(path, timeout=60, progress=said.append)
    try:
        assert [d["engine"] for d in result.decisions] == ["opa"]
        assert any(line.startswith("starting opa on") for line in said)
        assert select_engine(load_manifest(path)).name == "opa"
    finally:
        teardown(path)


def test_auto_without_an_opa_binary_says_once_that_the_embedded_engine_decides(stack, monkeypatch) -> None:
    from swiftdeploy.ops import deploy, promote_canary, teardown

    no_tools_opa(monkeypatch, stack)
    path = write(stack, "auto")
    said: list[str] = []
    try:
        result = deploy(path, timeout=60, progress=said.append)
        promote_canary(path, progress=said.append)
    finally:
        teardown(path)
    notes = [line for line in said if "embedded engine decides" in line]
    assert len(notes) == 1 and notes[0].startswith("no OPA binary (opa.binary is not set, no `opa` on PATH")
    assert [d["engine"] for d in result.decisions] == ["embedded"]
    assert {r["engine"] for r in history(stack) if r["event"] == "policy_decision"} == {"embedded"}
    assert not (stack / ".swiftdeploy" / "pids" / "opa.json").exists()


def test_engine_opa_without_a_binary_is_exit_4_and_starts_nothing(stack, monkeypatch) -> None:
    from swiftdeploy.ops import deploy

    no_tools_opa(monkeypatch, stack)
    path = write(stack, "opa")
    with pytest.raises(PolicyEngineUnavailable, match="policy.engine is opa but there is no OPA binary") as info:
        deploy(path, timeout=30)
    assert info.value.exit_code == 4 and "make opa" in str(info.value)
    assert not list((stack / ".swiftdeploy" / "pids").glob("*.json"))


def test_an_opa_port_held_by_another_program_is_refused(opa_binary, stack) -> None:
    """swiftdeploy asks only the OPA it started: something already listening on opa.port is never trusted."""
    from swiftdeploy.ops import deploy

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        path = write(stack, "opa", binary=opa_binary, opa_port=squatter.getsockname()[1])
        with pytest.raises(OperationFailed, match=r"port \d+ \(opa.port\) is already in use") as info:
            deploy(path, timeout=30)
    assert info.value.exit_code == 1
    assert not list((stack / ".swiftdeploy" / "pids").glob("*.json"))


def test_the_demo_is_decided_by_the_real_opa_and_says_so(opa_binary, tmp_path) -> None:
    folder = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PATH": f"{Path(opa_binary).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        [SWIFTDEPLOY, "demo", "--keep", str(folder), "--window", "60"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "starting opa on 127.0.0.1:" in done.stdout
    assert done.stdout.count("gate decided by the real OPA (opa run --server)") == 3  # deploy, promote x2
    assert "canary: deny (opa engine)" in done.stdout
    assert "decided by the opa engine; manifest, files and processes unchanged" in done.stdout
    records = history(folder)
    assert {r["engine"] for r in records if r["event"] == "policy_decision"} == {"opa"}
    assert {e for r in records if r["event"] == "status" for e in r["engines"]} <= {"opa"}
    assert not (folder / ".swiftdeploy").exists()
    assert not (folder / "policy-bundle").exists()  # teardown --clean removed the bundle, system/ included
