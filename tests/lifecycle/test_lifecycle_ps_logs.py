"""`ps`, `logs` and `-m` after the command on the local runtime, with the real processes a deploy starts (the demo
API under uvicorn, nginx): what runs, its pid, ports, version and health; a killed canary shown as exited; each
service's log, nginx's access log, `--follow` until Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import httpx
import psutil
from support import SWIFTDEPLOY, cli, write_manifest

from swiftdeploy.manifest import load_manifest


def by_service(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {s["service"]: s for s in json.loads(result.stdout)["services"]}


def pid_of(stack_dir, service: str) -> int:
    return json.loads((stack_dir / ".swiftdeploy" / "pids" / f"{service}.json").read_text())["pid"]


def test_ps_shows_each_service_as_it_runs(stack_dir):
    manifest = write_manifest(stack_dir)
    m = load_manifest(manifest)
    before = by_service(cli(manifest, "ps", "--json"))
    assert {name: s["state"] for name, s in before.items()} == {"app": "absent", "nginx": "absent"}

    for step in (("deploy",), ("promote", "canary")):
        assert cli(manifest, *step).returncode == 0
    services = by_service(cli(manifest, "ps", "--json"))
    assert list(services) == ["app", "app-canary", "nginx"]
    app, canary, nginx = services["app"], services["app-canary"], services["nginx"]
    assert (app["role"], app["state"], app["health"], app["version"]) == ("stable", "running", "healthy", "1.0.0")
    assert (canary["role"], canary["health"], canary["version"]) == ("canary", "healthy", "2.0.0")
    assert app["pid"] == pid_of(stack_dir, "app") and canary["pid"] == pid_of(stack_dir, "app-canary")
    assert app["ports"] == [m.services.port] and canary["ports"] != app["ports"]
    assert (nginx["role"], nginx["ports"]) == ("proxy", [m.nginx.port, m.nginx.admin_port])
    assert all(s["uptime_seconds"] is not None and s["container"] is None for s in services.values())

    table = cli(manifest, "ps")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[3:] if line.strip()}
    assert rows["app-canary"][:4] == ["app-canary", "canary", "running", "healthy"], table.stdout
    assert str(canary["pid"]) in rows["app-canary"] and "2.0.0" in rows["app-canary"]

    # a canary that died: exited, and why, until something restarts it
    psutil.Process(canary["pid"]).kill()
    psutil.Process(canary["pid"]).wait(timeout=10)
    dead = by_service(cli(manifest, "ps", "--json"))["app-canary"]
    assert (dead["state"], dead["health"], dead["pid"]) == ("exited", "-", canary["pid"])
    assert "not running" in dead["detail"]
    assert "app-canary: not running" in cli(manifest, "ps").stdout


def test_manifest_option_after_the_command(stack_dir, tmp_path):
    manifest = write_manifest(stack_dir)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SWIFTDEPLOY, *args], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120)

    after = run("ps", "--json", "-m", str(manifest))
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["project"] == "swiftdeploy-app"
    assert run("promote", "canary", "--manifest", str(manifest), "--json").returncode == 1  # found it: no stack
    assert run("lock", "status", "-m", str(manifest)).returncode == 0
    # the later one wins; without any, ./manifest.yaml (absent here: exit 2 naming it)
    assert run("-m", str(tmp_path / "nope.yaml"), "ps", "-m", str(manifest)).returncode == 0
    missing = run("ps")
    assert missing.returncode == 2 and "manifest.yaml" in missing.stderr


def test_logs_of_each_service_and_follow(stack_dir):
    manifest = write_manifest(stack_dir)
    m = load_manifest(manifest)
    assert cli(manifest, "logs").returncode == 0  # nothing deployed yet: a warning, exit 0
    for step in (("deploy",), ("promote", "canary")):
        assert cli(manifest, *step).returncode == 0
    canary_port = json.loads((stack_dir / ".swiftdeploy" / "pids" / "app-canary.json").read_text())["port"]

    app = cli(manifest, "logs", "app", "-n", "20")
    assert app.returncode == 0, app.stderr
    assert f"Uvicorn running on http://127.0.0.1:{m.services.port}" in app.stdout
    assert " | " not in app.stdout  # one source: no prefix
    canary = cli(manifest, "logs", "canary")  # a track's name for its app
    assert f"Uvicorn running on http://127.0.0.1:{canary_port}" in canary.stdout

    with httpx.Client(timeout=10, trust_env=False) as client:
        assert client.get(f"http://127.0.0.1:{m.nginx.port}/?probe-once").status_code == 200
    nginx = cli(manifest, "logs", "nginx", "-n", "50")
    access = [line for line in nginx.stdout.splitlines() if line.startswith("nginx-access | ")]
    assert any("GET /?probe-once" in line for line in access), nginx.stdout

    every = cli(manifest, "logs", "-n", "5").stdout
    for source in ("app | ", "app-canary | ", "nginx-access | "):
        assert source in every, every
    assert cli(manifest, "logs", "-n", "2", "app").stdout.count("\n") == 2

    unknown = cli(manifest, "logs", "postgres")
    assert unknown.returncode == 2 and "no service 'postgres'" in unknown.stderr and "app-canary" in unknown.stderr

    # --follow: a request made after it started shows up; Ctrl-C ends it with exit 0
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [SWIFTDEPLOY, "-m", str(manifest), "logs", "nginx", "-f", "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        # its access-log tail line says it has read that file up to its end: what comes next is new
        read_until(lines, lambda line: line.startswith("nginx-access | "))
        with httpx.Client(timeout=10, trust_env=False) as client:
            assert client.get(f"http://127.0.0.1:{m.nginx.port}/?probe-follow").status_code == 200
        line = read_until(lines, lambda line: "probe-follow" in line)
        assert line.startswith("nginx-access | ") and "GET /?probe-follow" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def read_until(lines: queue.Queue[str], wanted, timeout: float = 30) -> str:
    """The first line of `lines` (a process's stdout) that `wanted(line)` accepts, waiting at most `timeout` s."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if wanted(line):
            return line
    raise AssertionError(f"no such line within {timeout}s: {seen}")
