"""`swiftdeploy demo` itself: the README's first command must pass, keep its folder on request, run on the base
port it is given, and leave no process behind."""

from __future__ import annotations

import os
import socket
import subprocess

from support import SWIFTDEPLOY, kill_leftovers, leftovers

from swiftdeploy.manifest import load_manifest
from swiftdeploy.runtime.procs import free_port_block


def test_demo_passes_and_cleans_up(tmp_path):
    folder = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    base = free_port_block(6)
    try:
        r = subprocess.run(
            [SWIFTDEPLOY, "demo", "--keep", str(folder), "--window", "60", "--port", str(base)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        steps = ["1. deploy", "3. promote canary", "6. promote stable (expect BLOCKED)", "10. audit", "11. teardown"]
        for step in steps:
            assert step in out, step
        assert "blocked with exit 3 as expected (error_rate" in out
        assert "relaxes the HOST thresholds" in out
        assert "demo passed: all 11 steps behaved as expected" in out
        report = (folder / "audit_report.md").read_text()
        assert "error_rate" in report and "```text" in report
        assert "mode: stable" in (folder / "manifest.yaml").read_text()
        assert "version: 2.0.0" in (folder / "manifest.yaml").read_text()
        m = load_manifest(folder / "manifest.yaml")  # --port: public, admin, then the app ports
        assert (m.nginx.port, m.nginx.admin_port, m.services.port) == (base, base + 1, base + 2)
        assert not (folder / ".swiftdeploy").exists()
        assert leftovers(folder) == []
    finally:
        kill_leftovers(folder)


def test_demo_refuses_a_non_empty_keep_folder(tmp_path):
    (tmp_path / "something").write_text("x")
    r = subprocess.run([SWIFTDEPLOY, "demo", "--keep", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "is not empty" in r.stderr


def test_demo_port_names_the_holder_of_a_busy_port(tmp_path):
    base = free_port_block(6)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 3))  # the canary's port
        busy.listen()
        r = subprocess.run(
            [SWIFTDEPLOY, "demo", "--port", str(base), "--keep", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        f"port {base + 3} (--port + 3, the demo's canary app port) is already in use by pid {os.getpid()}" in r.stderr
    )
    assert r.stdout == ""  # nothing started, nothing narrated
    assert not (tmp_path / "d").exists()
