"""Fault tests on the local runtime: an app that never becomes healthy, a port already taken, the app killed
mid-run, stale pid files, and two deploys at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from support import SWIFTDEPLOY, cli, leftovers, write_manifest

from swiftdeploy import history
from swiftdeploy.manifest import load_manifest


def events(folder):
    return [r["event"] for r in history.read(folder / "history.jsonl")]


def no_pid_files(folder):
    pids = folder / ".swiftdeploy" / "pids"
    return not pids.exists() or not list(pids.glob("*.json"))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # listens, but has no /healthz: the last answer is shown
        (["PYTHON", "-m", "http.server", "APP_PORT", "--bind", "127.0.0.1"], "last answer: HTTP 404"),
        # never listens at all
        (["sleep", "60"], "last answer: ConnectError: [Errno 111] Connection refused"),
    ],
)
def test_app_that_never_becomes_healthy(stack_dir, command, expected):
    manifest = write_manifest(stack_dir)
    port = load_manifest(manifest).services.port
    argv = [sys.executable if c == "PYTHON" else str(port) if c == "APP_PORT" else c for c in command]
    manifest = write_manifest(stack_dir, command=argv, app_port=port)
    r = cli(manifest, "deploy", "--timeout", "3")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "app (pid " in r.stderr
    assert f"did not answer GET http://127.0.0.1:{port}/healthz with 200 within 3s" in r.stderr
    assert expected in r.stderr
    assert "see " in r.stderr and "app.log" in r.stderr
    assert leftovers(stack_dir) == [] and no_pid_files(stack_dir)
    assert events(stack_dir)[-1] == "deploy_failed"


def test_app_that_exits_at_once(stack_dir):
    manifest = write_manifest(stack_dir, command=[sys.executable, "-m", "no_such_module_here"])
    r = cli(manifest, "deploy", "--timeout", "10")
    assert r.returncode == 1
    assert "app exited before becoming healthy (exit code 1)" in r.stderr
    assert "No module named no_such_module_here" in r.stderr  # the log tail
    assert leftovers(stack_dir) == [] and no_pid_files(stack_dir)


@pytest.mark.parametrize("field", ["nginx.port", "nginx.admin_port", "services.port"])
def test_port_already_taken(stack_dir, field):
    manifest = write_manifest(stack_dir)
    m = load_manifest(manifest)
    port = {"nginx.port": m.nginx.port, "nginx.admin_port": m.nginx.admin_port, "services.port": m.services.port}[field]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        r = cli(manifest, "deploy", "--timeout", "20")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"port {port} ({field}) is already in use by pid {os.getpid()}" in r.stderr
    assert f"change {field} in the manifest" in r.stderr
    assert leftovers(stack_dir) == [] and no_pid_files(stack_dir)


def test_app_killed_mid_run(stack_dir):
    manifest = write_manifest(stack_dir)
    m = load_manifest(manifest)
    assert cli(manifest, "deploy").returncode == 0
    record = json.loads((stack_dir / ".swiftdeploy" / "pids" / "app.json").read_text())
    os.kill(record["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(record["pid"]) and psutil.Process(record["pid"]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    # nginx still answers, with its JSON 502 body and the X-Deployed-By header
    response = httpx.get(f"http://127.0.0.1:{m.nginx.port}/", timeout=10)
    assert response.status_code == 502
    assert response.headers["x-deployed-by"] == "swiftdeploy"
    assert response.json() == {
        "error": "bad gateway: the service did not answer",
        "code": 502,
        "service": "app",
        "contact": "ops@example.com",
    }

    # status says the stable track is down; promote refuses, naming the dead process
    r = cli(manifest, "status", "--json", "--interval", "0.2")
    assert r.returncode in (1, 3), r.stderr  # 1: a track that should run is down
    assert json.loads(r.stdout)["tracks"]["stable"]["state"] == "down"
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 1
    assert f"the stable app app is not healthy: not running (pid {record['pid']} exited" in r.stderr
    assert load_manifest(manifest).services.mode == "stable"

    # a deploy converges: a fresh stable app behind the nginx that kept running
    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stderr
    assert httpx.get(f"http://127.0.0.1:{m.nginx.port}/", timeout=10).status_code == 200
    os.kill(json.loads((stack_dir / ".swiftdeploy" / "pids" / "app.json").read_text())["pid"], signal.SIGKILL)

    # teardown still cleans up everything
    r = cli(manifest, "teardown")
    assert r.returncode == 0, r.stderr
    assert "app (pid " in r.stdout and "): not running" in r.stdout
    assert "nginx (pid" in r.stdout and "stopped" in r.stdout
    assert leftovers(stack_dir) == [] and no_pid_files(stack_dir)


def test_stale_pid_file_is_never_signalled(stack_dir):
    """A pid file whose pid now belongs to another program (here: this test process) is recognised by its create
    time and left alone."""
    manifest = write_manifest(stack_dir)
    pids = stack_dir / ".swiftdeploy" / "pids"
    pids.mkdir(parents=True)
    stale = {"name": "app", "pid": os.getpid(), "create_time": 1.0, "argv": ["x"], "log": "x", "started": "x"}
    (pids / "app.json").write_text(json.dumps(stale))
    r = cli(manifest, "teardown")
    assert r.returncode == 0, r.stderr
    assert f"app (pid {os.getpid()}): not running" in r.stdout
    assert not (pids / "app.json").exists()
    # and a deploy over a stale pid file starts a fresh app
    (pids / "app.json").write_text(json.dumps(stale))
    assert cli(manifest, "deploy").returncode == 0
    assert json.loads((pids / "app.json").read_text())["pid"] != os.getpid()


def test_two_deploys_at_once(stack_dir):
    manifest = write_manifest(stack_dir)
    env = {**os.environ, "NO_COLOR": "1"}
    argv = [SWIFTDEPLOY, "-m", str(manifest), "deploy"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        outcomes.append((proc.returncode, proc.pid, out, err))
    assert sorted(code for code, *_ in outcomes) == [0, 1], outcomes
    (_, winner, _, _), (_, _, _, refused) = sorted(outcomes, key=lambda o: o[0])
    assert "another swiftdeploy operation holds the lock" in refused
    assert f"pid {winner} on {socket.gethostname()}, started 20" in refused
    assert "deploy" in refused  # the holder's command
    assert events(stack_dir).count("deploy_succeeded") == 1


def test_redeploy_converges(stack_dir):
    """A second deploy keeps what runs; a changed version (deploy --direct) replaces the app blue/green and serves
    it."""
    manifest = write_manifest(stack_dir)
    m = load_manifest(manifest)
    pid_file = stack_dir / ".swiftdeploy" / "pids" / "app.json"
    assert cli(manifest, "deploy").returncode == 0
    first = json.loads(pid_file.read_text())["pid"]
    r = cli(manifest, "deploy")
    assert r.returncode == 0 and "app already running" in r.stderr
    assert json.loads(pid_file.read_text())["pid"] == first
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    assert cli(manifest, "deploy").returncode == 3  # a new version onto stable: the policy wants a canary
    assert cli(manifest, "deploy", "--direct").returncode == 0
    assert json.loads(pid_file.read_text())["pid"] != first
    response = httpx.get(f"http://127.0.0.1:{m.nginx.port}/", timeout=10)
    assert response.headers["x-app-version"] == "1.0.1"
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


def test_blocked_deploy_starts_nothing(stack_dir):
    manifest = write_manifest(stack_dir, thresholds={"min_disk_free_gb": 1000000})
    r = cli(manifest, "deploy", "--json")
    assert r.returncode == 3, r.stdout + r.stderr
    answer = json.loads(r.stdout)  # --json: only JSON on stdout, even when blocked
    assert answer["ok"] is False and answer["blocked"] is True
    assert answer["decision"]["domain"] == "infrastructure" and answer["decision"]["verdict"] == "deny"
    rules = [v["rule"] for v in answer["decision"]["violations"]]
    assert any("disk" in rule for rule in rules), rules
    assert "vs 1000000 GB" in r.stderr  # the violation table: observed vs threshold with its unit
    assert leftovers(stack_dir) == [] and no_pid_files(stack_dir)
    assert events(stack_dir)[-2:] == ["policy_decision", "deploy_blocked"]
