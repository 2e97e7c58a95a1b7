"""Fixtures for the observe tests: a local-runtime manifest on free ports beside the demo API processes and the
real nginx that tests/conftest.py starts (`demo_api`, `local_nginx`); the live dashboard under a pty."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import SWIFTDEPLOY, free_port, relaxed_host_thresholds, stop_process, wait_until


@pytest.fixture
def manifest_file(tmp_path: Path) -> Callable[..., Path]:
    def write(mode: str = "canary", extra: str = "") -> Path:
        path = tmp_path / "manifest.yaml"
        path.write_text(
            f"services: {{image: swift-deploy-1-node:latest, port: 3000, mode: {mode}}}\n"
            f"nginx: {{image: nginx:latest, port: {free_port()}, admin_port: {free_port()}}}\n"
            "runtime: local\n"
            "policy:\n"
            "  engine: embedded\n"
            "  window_seconds: 30\n"
            f"  thresholds: {relaxed_host_thresholds()}\n" + extra,
            encoding="utf-8",
        )
        return path

    return write


class LiveStatus:
    """`swiftdeploy status` (the live Rich view) under a pseudo-terminal: its output is drained in a thread, so the
    child never blocks on a full pty buffer. `refreshes()` counts the views drawn (each ends with the footer)."""

    FOOTER = "Ctrl-C to quit"

    def __init__(self, manifest: Path, interval: float) -> None:
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
        self.proc = subprocess.Popen(
            [SWIFTDEPLOY, "-m", str(manifest), "status", "--interval", str(interval)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.output = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output.extend(chunk)

    @property
    def text(self) -> str:
        return bytes(self.output).decode(errors="replace")

    def refreshes(self) -> int:
        return self.text.count(self.FOOTER)

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        wait_until(ready, self.proc, f"status (waiting for {what}): {self.text[-2000:]}", timeout)

    def interrupt(self) -> int:
        """Ctrl-C; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=15)

    def close(self) -> None:
        stop_process(self.proc, sig=signal.SIGKILL)
        os.close(self.master)
        self._reader.join(timeout=5)


@pytest.fixture
def live_status() -> Iterator[Callable[[Path, float], LiveStatus]]:
    started: list[LiveStatus] = []

    def start(manifest: Path, interval: float = 0.3) -> LiveStatus:
        started.append(LiveStatus(manifest, interval))
        return started[-1]

    yield start
    for live in started:
        live.close()
