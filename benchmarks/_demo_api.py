"""The demo API as a subprocess on a free 127.0.0.1 port, for the benchmark scripts (one copy for all of them).

Imported as `from _demo_api import start_api, stop`: a script's own folder is on sys.path when it runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(log_dir: Path, name: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m demo_api` (MODE stable, APP_VERSION 1.0.0 unless `env` says otherwise) once /healthz answers;
    (process, base URL). Exits the script with a message when it dies or stays unhealthy for 20 s."""
    port = free_port()
    env = os.environ | {"MODE": "stable", "APP_VERSION": "1.0.0", **env, "APP_PORT": str(port), "APP_HOST": "127.0.0.1"}
    log = (log_dir / f"api-{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "demo_api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo_api exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit("demo_api did not become healthy within 20 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
