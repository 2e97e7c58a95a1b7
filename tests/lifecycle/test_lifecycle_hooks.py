"""Manifest hooks end to end on the local runtime, through the CLI: real hook processes (small Python scripts in the
stack's folder) run by real deploys, promotions, a blocked gate and a rollback.

A failing pre_deploy hook stops the deploy before anything starts (exit 1, its stderr shown); a failing post hook is
a warning and a `hook_run` record; every SWIFTDEPLOY_* variable is what docs/operations.md says (a hook writes its
environment to a file); a hanging hook is killed at hooks.timeout together with the child it started.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import psutil
from support import cli, leftovers, write_manifest

from swiftdeploy import history

ENV_HOOK = """\
import json, os, pathlib
out = pathlib.Path("hook-env")
out.mkdir(exist_ok=True)
seen = {k: v for k, v in os.environ.items() if k.startswith("SWIFTDEPLOY_")}
name = os.environ["SWIFTDEPLOY_EVENT"] + "-" + os.environ["SWIFTDEPLOY_OPERATION"]
(out / (name + ".json")).write_text(json.dumps({"cwd": os.getcwd(), "env": seen}))
"""

FAIL_HOOK = """\
import sys
print("this goes to stdout, not shown")
print("smoke test: GET /healthz answered 503", file=sys.stderr)
sys.exit(3)
"""

HANG_HOOK = """\
import pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pathlib.Path("hang-pids").write_text(f"{__import__('os').getpid()} {child.pid}")
time.sleep(600)
"""


def hook_stack(folder: Path, hooks: dict[str, list[str]], timeout: str = "30s") -> Path:
    """A local-runtime stack whose manifest runs the named scripts (written into hooks/) at each event."""
    manifest = write_manifest(folder)
    scripts = folder / "hooks"
    scripts.mkdir()
    for name, text in (("env.py", ENV_HOOK), ("fail.py", FAIL_HOOK), ("hang.py", HANG_HOOK)):
        (scripts / name).write_text(text)
    lines = ["hooks:", f"  timeout: {timeout}"]
    for event, names in hooks.items():
        argvs = ", ".join(f"['{sys.executable}', hooks/{name}]" for name in names)
        lines.append(f"  {event}: [{argvs}]")
    manifest.write_text(manifest.read_text() + "\n".join(lines) + "\n")
    return manifest


def hook_env(folder: Path, event: str, operation: str) -> dict:
    return json.loads((folder / "hook-env" / f"{event}-{operation}.json").read_text())


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie has ended (its parent reaps it)
    except psutil.NoSuchProcess:
        return False


def records(folder: Path, event: str) -> list[dict]:
    return [r for r in history.read(folder / "history.jsonl") if r["event"] == event]


def test_failing_pre_deploy_hook_blocks_the_deploy(stack_dir):
    manifest = hook_stack(stack_dir, {"pre_deploy": ["env.py", "fail.py", "env.py"]})
    text = manifest.read_text()
    r = cli(manifest, "deploy")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"error: pre_deploy hook `{sys.executable} hooks/fail.py` failed (exit code 3" in r.stderr
    assert "nothing was changed" in r.stderr and "smoke test: GET /healthz answered 503" in r.stderr
    assert "not shown" not in r.stderr and "Traceback" not in r.stderr
    # nothing started, the manifest untouched, the hook after the failing one did not run
    assert leftovers(stack_dir) == []
    assert not list((stack_dir / ".swiftdeploy" / "pids").glob("*.json"))
    assert manifest.read_text() == text
    runs = records(stack_dir, "hook_run")
    assert [(run["hook"], run["ok"], run["exit_code"]) for run in runs] == [("pre_deploy", True, 0),
                                                                            ("pre_deploy", False, 3)]  # fmt: skip
    assert "answered 503" in runs[1]["stderr_tail"] and runs[1]["operation"] == "deploy"
    assert records(stack_dir, "deploy_failed") and not records(stack_dir, "deploy_succeeded")


def test_hook_environment_and_failing_post_hook(stack_dir):
    events = ("pre_deploy", "pre_promote", "post_promote", "on_blocked", "post_rollback")
    hooks = {event: ["env.py"] for event in events}
    manifest = hook_stack(stack_dir, {**hooks, "post_deploy": ["env.py", "fail.py"]})

    # a failing post hook: a warning, the deploy succeeded
    r = cli(manifest, "deploy", "--json")
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["ok"] and answer["services"]["app"]["healthy"]
    warning = f"post_deploy hook `{sys.executable} hooks/fail.py` failed (exit code 3"
    assert any(w.startswith(warning) and "answered 503" in w for w in answer["warnings"]), answer["warnings"]
    assert "warning: " + warning in r.stderr

    pre = hook_env(stack_dir, "pre_deploy", "deploy")
    assert pre["cwd"] == str(stack_dir)
    env = pre["env"]
    assert env["SWIFTDEPLOY_EVENT"] == "pre_deploy" and env["SWIFTDEPLOY_OPERATION"] == "deploy"
    assert env["SWIFTDEPLOY_VERSION"] == "1.0.0" and env["SWIFTDEPLOY_IMAGE"] == "swift-deploy-1-node:latest"
    assert env["SWIFTDEPLOY_VERDICT"] == "allow" and env["SWIFTDEPLOY_WEIGHT"] == ""
    assert env["SWIFTDEPLOY_MANIFEST"] == str(manifest) and env["SWIFTDEPLOY_SERVICE"] == "app"
    assert env["SWIFTDEPLOY_RUNTIME"] == "local"
    assert json.loads(env["SWIFTDEPLOY_RECORD"])["event"] == "deploy_started"
    post = hook_env(stack_dir, "post_deploy", "deploy")["env"]
    record = json.loads(post["SWIFTDEPLOY_RECORD"])
    assert record["event"] == "deploy_succeeded" and record["services"]["app"]["healthy"] is True
    assert record == records(stack_dir, "deploy_succeeded")[-1]  # the history record itself

    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    pre = hook_env(stack_dir, "pre_promote", "promote_canary")["env"]
    assert (pre["SWIFTDEPLOY_VERSION"], pre["SWIFTDEPLOY_WEIGHT"]) == ("2.0.0", "50")
    assert pre["SWIFTDEPLOY_VERDICT"] == "allow"
    assert json.loads(pre["SWIFTDEPLOY_RECORD"])["event"] == "promote_started"
    post = hook_env(stack_dir, "post_promote", "promote_canary")["env"]
    assert json.loads(post["SWIFTDEPLOY_RECORD"])["event"] == "promote_succeeded" and post["SWIFTDEPLOY_WEIGHT"] == "50"

    # a blocked gate (no traffic: inconclusive) runs on_blocked; pre_promote of promote stable does not run
    r = cli(manifest, "promote", "stable", "--window", "1")
    assert r.returncode == 3, r.stdout + r.stderr
    blocked = hook_env(stack_dir, "on_blocked", "promote_stable")["env"]
    assert blocked["SWIFTDEPLOY_VERDICT"] == "inconclusive" and blocked["SWIFTDEPLOY_VERSION"] == "2.0.0"
    record = json.loads(blocked["SWIFTDEPLOY_RECORD"])
    assert record["event"] == "promote_blocked" and record["verdict"] == "inconclusive"
    assert not (stack_dir / "hook-env" / "pre_promote-promote_stable.json").exists()

    r = cli(manifest, "rollback")
    assert r.returncode == 0, r.stderr
    env = hook_env(stack_dir, "post_rollback", "rollback")["env"]
    assert json.loads(env["SWIFTDEPLOY_RECORD"])["event"] == "rollback" and env["SWIFTDEPLOY_VERSION"] == "1.0.0"

    runs = Counter((run["hook"], run["ok"]) for run in records(stack_dir, "hook_run"))
    assert runs == {("pre_deploy", True): 1, ("post_deploy", True): 1, ("post_deploy", False): 1,
                    ("pre_promote", True): 1, ("post_promote", True): 1, ("on_blocked", True): 1,
                    ("post_rollback", True): 1}  # fmt: skip
    r = cli(manifest, "audit")
    assert r.returncode == 0, r.stderr
    assert "| Hook runs | 7 (1 failed) |" in (stack_dir / "audit_report.md").read_text()


def test_hanging_hook_is_killed_with_its_child(stack_dir):
    manifest = hook_stack(stack_dir, {"pre_deploy": ["hang.py"]}, timeout="2s")
    r = cli(manifest, "deploy")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"pre_deploy hook `{sys.executable} hooks/hang.py` did not finish within 2s and was killed" in r.stderr
    pids = [int(p) for p in (stack_dir / "hang-pids").read_text().split()]
    assert [p for p in pids if alive(p)] == []  # the hook and the child it started: gone when the CLI returned
    assert leftovers(stack_dir) == []
    (run,) = records(stack_dir, "hook_run")
    assert run["timed_out"] is True and run["ok"] is False
