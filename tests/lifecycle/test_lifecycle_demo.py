"""`swiftdeploy demo` itself: the README's first command must pass, keep its folder on request, and leave no
process behind."""

from __future__ import annotations

import os
import subprocess

from lifecycle_support import SWIFTDEPLOY, kill_leftovers, leftovers


def test_demo_passes_and_cleans_up(tmp_path):
    folder = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    try:
        r = subprocess.run(
            [SWIFTDEPLOY, "demo", "--keep", str(folder), "--window", "60"],
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
        assert "error_rate" in report and "```mermaid" in report
        assert "mode: stable" in (folder / "manifest.yaml").read_text()
        assert "version: 2.0.0" in (folder / "manifest.yaml").read_text()
        assert not (folder / ".swiftdeploy").exists()
        assert leftovers(folder) == []
    finally:
        kill_leftovers(folder)


def test_demo_refuses_a_non_empty_keep_folder(tmp_path):
    (tmp_path / "something").write_text("x")
    r = subprocess.run([SWIFTDEPLOY, "demo", "--keep", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "is not empty" in r.stderr
