"""Fixtures for the observe tests: real demo API processes on free 127.0.0.1 ports, and a manifest beside them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

MANIFEST = """\
services: {{image: swift-deploy-1-node:latest, port: 3000, mode: {mode}}}
nginx: {{image: nginx:latest, port: {public}, admin_port: {admin}}}
runtime: local
policy:
  engine: embedded
  window_seconds: 30
  # the test machine's own load and disk must not decide the canary tests
  thresholds: {{max_cpu_load: 1000, min_disk_free_gb: 0, max_memory_used_percent: 100}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoApi:
    def __init__(self, mode: str, log: Path) -> None:
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MODE": mode, "APP_HOST": "127.0.0.1", "APP_PORT": str(self.port), "APP_VERSION": "1.0.0"}
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo_api"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo API ({self.mode}) exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"demo API ({self.mode}) not healthy after {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def demo_api(tmp_path: Path) -> Iterator[Callable[[str], DemoApi]]:
    """Start demo API processes (`python -m demo_api`); every one is stopped when the test ends."""
    started: list[DemoApi] = []

    def start(mode: str) -> DemoApi:
        api = DemoApi(mode, tmp_path / f"demo_api-{mode}-{len(started)}.log")
        started.append(api)
        api.wait_ready()
        return api

    try:
        yield start
    finally:
        for api in started:
            api.stop()


@pytest.fixture
def manifest_file(tmp_path: Path) -> Callable[..., Path]:
    def write(mode: str = "canary") -> Path:
        path = tmp_path / "manifest.yaml"
        path.write_text(MANIFEST.format(mode=mode, public=free_port(), admin=free_port()), encoding="utf-8")
        return path

    return write


class Nginx:
    """The real nginx with the generated config for the local target: the admin listener status goes through."""

    def __init__(self, m, state_dir: Path, stable_port: int, canary_port: int | None) -> None:
        from swiftdeploy.render import render_nginx
        from swiftdeploy.render.nginx import NginxTarget

        target = NginxTarget.local(m, state_dir, stable_port, canary_port)
        for folder in target.required_dirs():
            folder.mkdir(parents=True, exist_ok=True)
        conf = state_dir / "nginx.conf"
        conf.write_text(render_nginx(m, target), encoding="utf-8")
        self.admin = f"http://127.0.0.1:{m.nginx.admin_port}"
        self.proc = subprocess.Popen(
            ["/usr/sbin/nginx", "-e", str(state_dir / "nginx-startup.log"), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}; see {state_dir}")
            try:
                httpx.get(f"{self.admin}/stable/healthz", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("nginx admin listener did not answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    started: list[Nginx] = []

    def start(m, stable_port: int, canary_port: int | None = None) -> Nginx:
        server = Nginx(m, tmp_path / "state", stable_port, canary_port)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
