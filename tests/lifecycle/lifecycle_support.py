"""Helpers for the lifecycle tests: a local-runtime manifest on free ports, the CLI as a subprocess, and a
check that nothing we started is left running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psutil

from swiftdeploy.runtime.procs import free_port

SWIFTDEPLOY = str(Path(sys.executable).with_name("swiftdeploy"))

MANIFEST = """\
# Lifecycle test manifest. This comment must survive every edit.
services:
  name: app
  image: swift-deploy-1-node:latest   # stable image
  version: 1.0.0
  port: {app_port}
{command}canary:
  image: swift-deploy-1-node:next     # the candidate
  version: 2.0.0
  weight: {weight}
nginx:
  port: {public_port}
  admin_port: {admin_port}
  contact: ops@example.com
runtime: local
policy:
  engine: embedded
  window_seconds: 60  # the longest `promote stable` watches; it stops at the first clear verdict
  thresholds:
    # host thresholds relaxed: the test machine is busy; canary thresholds stay the defaults
    max_cpu_load: 1000
    min_disk_free_gb: 0.1
    max_memory_used_percent: 100
"""


def distinct_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def write_manifest(folder: Path, *, weight: int = 50, command: list[str] | None = None, **ports: int) -> Path:
    public_port, admin_port, app_port = distinct_ports(3)
    values = {"public_port": public_port, "admin_port": admin_port, "app_port": app_port, **ports}
    command_yaml = ""
    if command is not None:
        command_yaml = "  command: [" + ", ".join(f"'{part}'" for part in command) + "]\n"
    path = folder / "manifest.yaml"
    path.write_text(MANIFEST.format(weight=weight, command=command_yaml, **values), encoding="utf-8")
    return path


def cli(
    manifest: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**(env or os.environ), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [SWIFTDEPLOY, "-m", str(manifest), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def leftovers(folder: Path) -> list[str]:
    """Live processes started for this folder: their cwd or argv is inside it (apps run with cwd = the manifest's
    folder, nginx with cwd = the state folder)."""
    found = []
    root = str(folder)
    for proc in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            cwd = proc.info["cwd"] or ""
            cmd = " ".join(proc.info["cmdline"] or [])
            if cwd.startswith(root) or root in cmd:
                found.append(f"pid {proc.pid}: {cmd} (cwd {cwd})")
        except psutil.Error:
            continue
    return found


def kill_leftovers(folder: Path) -> None:
    for line in leftovers(folder):
        pid = int(line.split()[1].rstrip(":"))
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
