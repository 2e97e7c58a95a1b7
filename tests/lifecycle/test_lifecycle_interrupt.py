"""Ctrl-C (a real SIGINT to the console script) during `deploy` and `promote stable` on the local runtime: one
`interrupted:` line saying which step was stopped and what was left, exit 130, a `*_interrupted` history record
that closes the start (the audit counts it), the lock free again, nothing left running that the run started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support import SWIFTDEPLOY, cli, leftovers, write_manifest

from swiftdeploy import history


def interrupt(manifest: Path, *args: str, when: str, log: Path, timeout: float = 60) -> tuple[int, str, str]:
    """Run `swiftdeploy -m MANIFEST ARGS...`, send SIGINT once `when` appears on its stderr (a progress line),
    and return (exit code, stdout, stderr)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [SWIFTDEPLOY, "-m", str(manifest), *args], stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
        try:
            deadline = time.monotonic() + timeout
            while when not in log.read_text():
                assert proc.poll() is None, f"ended before {when!r}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no {when!r} within {timeout}s:\n{log.read_text()}"
                time.sleep(0.05)
            time.sleep(0.3)  # into the step, past its first line
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return proc.returncode, out, log.read_text()


def interrupted_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("interrupted: ")]


def events(manifest: Path) -> list[dict]:
    return list(history.read(manifest.parent / "history.jsonl"))


def test_ctrl_c_during_deploy_stops_what_it_started(stack_dir, tmp_path):
    # an app that never answers /healthz: the deploy waits for it until Ctrl-C
    manifest = write_manifest(stack_dir, command=["sleep", "120"])
    code, out, err = interrupt(manifest, "deploy", "--timeout", "120", when="starting app", log=tmp_path / "err")
    assert code == 130, err
    (line,) = interrupted_lines(err)
    assert line.startswith("interrupted: deploy stopped by Ctrl-C while starting app on 127.0.0.1:"), line
    assert "the manifest is as it was" in line and "nothing of the stack runs" in line, line
    assert "error:" not in err and "Traceback" not in err and out == ""
    assert leftovers(stack_dir) == []  # the app it started is stopped again

    records = events(manifest)
    assert [r["event"] for r in records] == ["deploy_started", "policy_decision", "deploy_interrupted"]
    last = records[-1]
    assert last["step"].startswith("starting app") and last["running"] == [] and last["manifest_changed"] is False
    assert last["version"] == "1.0.0" and last["runtime"] == "local"

    # the audit closes the start; the lock is free for the next run
    done = cli(manifest, "audit", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"]["deploy_interrupted"] == 1
    report = (stack_dir / "audit_report.md").read_text()
    assert "1 started: 0 succeeded, 0 blocked, 0 failed, 1 interrupted" in report
    status = cli(manifest, "lock", "status", "--json")
    assert json.loads(status.stdout)["state"] == "free"


def test_ctrl_c_during_promote_stable_changes_nothing(stack_dir, tmp_path):
    manifest = write_manifest(stack_dir)
    for step in (("deploy",), ("promote", "canary")):
        done = cli(manifest, *step)
        assert done.returncode == 0, done.stderr
    before = manifest.read_text()
    code, out, err = interrupt(
        manifest, "promote", "stable", "--window", "60", "--json", when="watching the canary", log=tmp_path / "err"
    )
    assert code == 130, err
    (line,) = interrupted_lines(err)
    stopped = "interrupted: promote stable stopped by Ctrl-C while watching the canary for up to 60s;"
    assert line.startswith(stopped), line
    assert "the manifest is as it was" in line
    for service in ("app (pid", "app-canary (pid", "nginx (pid"):
        assert service in line, line
    doc = json.loads(out)  # --json: the interruption is a JSON answer too
    assert doc["interrupted"] is True and doc["exit_code"] == 130 and doc["ok"] is False
    assert doc["error"] == line.removeprefix("interrupted: ")
    assert manifest.read_text() == before

    last = events(manifest)[-1]
    assert last["event"] == "promote_interrupted" and last["target"] == "stable"
    assert last["step"] == "watching the canary for up to 60s" and last["window_seconds"] == 60
    assert sorted(last["running"]) == ["app", "app-canary", "nginx"] and last["manifest_changed"] is False
    # still a working canary stack, and the next operation takes the lock without a takeover warning
    rolled = cli(manifest, "rollback")
    assert rolled.returncode == 0 and "took over the lock" not in rolled.stderr, rolled.stderr
