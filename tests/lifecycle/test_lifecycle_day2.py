"""Day-2 operations on the local runtime, through the CLI (real nginx, real app processes): the canary runs its own
command and `promote stable` carries it over; a new version straight onto stable is a policy decision; the app
ports are fixed and alternate at each blue/green restart; teardown sets the mode back to stable; a rollback or
teardown with nothing to do says so and records nothing; `teardown --clean` without a Docker engine cleans what
it can."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
from support import background_traffic, cli, leftovers, write_manifest

from swiftdeploy import history
from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import edit_text

# Runs the demo API after recording, per start, the environment swiftdeploy gave it (the folder is argv[1]).
RECORDING_APP = """\
import json, os, sys
from pathlib import Path

keys = ("MODE", "APP_VERSION", "APP_IMAGE", "APP_PORT", "APP_HOST")
record = {key: os.environ.get(key) for key in keys}
Path(sys.argv[1], f"{record['MODE']}-{record['APP_PORT']}.json").write_text(json.dumps(record))
from demo_api.__main__ import main

sys.exit(main())
"""


def edit(manifest: Path, values: dict) -> None:
    manifest.write_text(edit_text(manifest.read_text(), values), encoding="utf-8")


def pid_record(folder: Path, service: str) -> dict:
    return json.loads((folder / ".swiftdeploy" / "pids" / f"{service}.json").read_text())


def admin_health(manifest: Path, track: str) -> dict:
    m = load_manifest(manifest)
    return httpx.get(f"http://127.0.0.1:{m.nginx.admin_port}/{track}/healthz", timeout=10).json()


def events(folder: Path) -> list[str]:
    return [r["event"] for r in history.read(folder / "history.jsonl")]


def test_the_canary_runs_its_own_command_and_promote_stable_carries_it(stack_dir):
    manifest = write_manifest(stack_dir, weight=50)
    (stack_dir / "recording_app.py").write_text(RECORDING_APP)
    seen = stack_dir / "seen"
    seen.mkdir()
    command = [sys.executable, str(stack_dir / "recording_app.py"), str(seen)]
    edit(manifest, {("canary", "command"): command})
    port = load_manifest(manifest).services.port

    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stderr
    stable = pid_record(stack_dir, "app")
    assert stable["argv"][1:] == ["-m", "demo_api"] and stable["port"] == port  # stable: services.command (unset)
    assert list(seen.iterdir()) == []

    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    canary = pid_record(stack_dir, "app-canary")
    assert canary["argv"] == command and canary["port"] == port + 1  # its own command, its own port
    started = json.loads((seen / f"canary-{port + 1}.json").read_text())
    assert started == {
        "MODE": "canary",
        "APP_VERSION": "2.0.0",
        "APP_IMAGE": "swift-deploy-1-node:next",
        "APP_PORT": str(port + 1),
        "APP_HOST": "127.0.0.1",
    }
    assert admin_health(manifest, "canary")["version"] == "2.0.0"

    with background_traffic(load_manifest(manifest)):
        r = cli(manifest, "promote", "stable", "--window", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"command {' '.join(command)}" in r.stderr  # the restart says what it runs
    promoted = load_manifest(manifest)
    assert promoted.services.command == command  # carried over like image and version
    assert (promoted.services.image, promoted.services.version) == ("swift-deploy-1-node:next", "2.0.0")
    assert "# Lifecycle test manifest. This comment must survive every edit." in manifest.read_text()
    stable = pid_record(stack_dir, "app")
    assert stable["argv"] == command and stable["port"] == port + 2  # blue/green: the stable app's second port
    assert json.loads((seen / f"stable-{port + 2}.json").read_text())["APP_IMAGE"] == "swift-deploy-1-node:next"
    assert f"app: healthy 127.0.0.1:{port + 2}" in r.stdout  # the port is shown
    assert not (stack_dir / ".swiftdeploy" / "pids" / "app-canary.json").exists()


def test_a_new_version_straight_onto_stable_is_a_policy_decision(stack_dir):
    manifest = write_manifest(stack_dir)
    port = load_manifest(manifest).services.port
    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stderr
    before = pid_record(stack_dir, "app")

    edit(manifest, {("services", "version"): "1.0.1"})
    r = cli(manifest, "deploy")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "direct_version_change" in r.stderr and "version 1.0.0 -> 1.0.1" in r.stderr
    for hint in ("swiftdeploy promote canary", "swiftdeploy rollout", "deploy --direct", "allow_direct_deploy: true"):
        assert hint in r.stderr, hint
    assert pid_record(stack_dir, "app") == before  # nothing restarted
    assert admin_health(manifest, "stable")["version"] == "1.0.0"
    blocked = [r for r in history.read(stack_dir / "history.jsonl") if r["event"] == "policy_decision"][-1]
    assert blocked["input"]["running_version"] == "1.0.0" and blocked["input"]["requested_version"] == "1.0.1"
    assert blocked["input"]["direct"] is False and events(stack_dir)[-1] == "deploy_blocked"

    r = cli(manifest, "deploy", "--direct")
    assert r.returncode == 0, r.stdout + r.stderr
    assert admin_health(manifest, "stable")["version"] == "1.0.1"
    assert pid_record(stack_dir, "app")["port"] == port + 2  # blue/green onto the second port ...
    r = cli(manifest, "deploy")  # ... and a converge of the same release is no version change
    assert r.returncode == 0, r.stderr
    assert pid_record(stack_dir, "app")["port"] == port + 2

    edit(manifest, {("services", "version"): "1.0.2", ("policy", "thresholds", "allow_direct_deploy"): True})
    r = cli(manifest, "deploy")  # allowed by the threshold: back on the first port
    assert r.returncode == 0, r.stdout + r.stderr
    assert admin_health(manifest, "stable")["version"] == "1.0.2"
    assert pid_record(stack_dir, "app")["port"] == port


def test_teardown_resets_the_mode_and_no_ops_record_nothing(stack_dir):
    manifest = write_manifest(stack_dir)
    assert cli(manifest, "deploy").returncode == 0
    assert cli(manifest, "promote", "canary").returncode == 0

    r = cli(manifest, "teardown")
    assert r.returncode == 0, r.stderr
    assert "stopped 3 process(es)" in r.stdout and "manifest mode set back to stable" in r.stdout
    assert load_manifest(manifest).services.mode == "stable"
    assert "# Lifecycle test manifest. This comment must survive every edit." in manifest.read_text()
    [record] = [r for r in history.read(stack_dir / "history.jsonl") if r["event"] == "teardown"]
    assert (record["mode_from"], record["mode_to"]) == ("canary", "stable")
    assert cli(manifest, "init", "--check").returncode == 0  # the generated files follow the manifest

    r = cli(manifest, "deploy")  # the next deploy starts stable alone
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (stack_dir / ".swiftdeploy" / "pids").glob("*.json")) == ["app.json", "nginx.json"]

    count = len(events(stack_dir))
    r = cli(manifest, "rollback")
    assert r.returncode == 0, r.stderr
    assert "nothing to roll back" in r.stdout
    assert "removing" not in r.stderr and "sending all public traffic" not in r.stderr  # nothing it did not do
    assert len(events(stack_dir)) == count  # not recorded: the audit counts no rollback

    assert cli(manifest, "teardown").returncode == 0
    count = len(events(stack_dir))
    r = cli(manifest, "teardown")
    assert r.returncode == 0, r.stderr
    assert "nothing to tear down" in r.stdout and "stopped" not in r.stdout
    assert len(events(stack_dir)) == count
    assert leftovers(stack_dir) == []


def test_teardown_clean_without_a_docker_engine_cleans_what_it_can(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("services: {image: demo:1, port: 3000}\nruntime: docker\n")
    env_engine = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    assert cli(manifest, "init").returncode == 0
    r = cli(manifest, "teardown", "--clean", env={**os.environ, **env_engine})
    assert r.returncode == 1, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: teardown --clean deleted the generated files and the state folder")
    assert f"no Docker engine answers at unix://{tmp_path}/no-engine.sock: the socket does not exist" in line
    assert "swiftdeploy init` then `swiftdeploy teardown --clean`" in line
    assert "('Connection aborted.'" not in r.stderr  # one sentence, not a Python tuple
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl", "manifest.yaml"]
    assert events(tmp_path)[-1] == "teardown_failed"
