"""A promotion that fails after the gate puts the manifest and the generated files back exactly, and leaves the
running tracks serving. The app here is the real demo API behind a tiny launcher that refuses to start for one
MODE:APP_VERSION pair (named by SWIFTDEPLOY_TEST_FAIL in the environment the CLI passes on)."""

from __future__ import annotations

import json
import os
import sys

import httpx
import pytest
from support import background_traffic, cli, leftovers, write_manifest

from swiftdeploy import history
from swiftdeploy.manifest import load_manifest

LAUNCHER = """\
import os, runpy, sys
if os.environ.get("SWIFTDEPLOY_TEST_FAIL") == os.environ["MODE"] + ":" + os.environ["APP_VERSION"]:
    print("launcher: refusing to start " + os.environ["MODE"] + " " + os.environ["APP_VERSION"], file=sys.stderr)
    sys.exit(3)
sys.argv = ["demo_api"]
runpy.run_module("demo_api", run_name="__main__")
"""


def files(folder):
    names = ["manifest.yaml", "docker-compose.yml", "nginx.conf", ".swiftdeploy/nginx/nginx.conf"]
    return {name: (folder / name).read_text() for name in names}


@pytest.fixture
def launcher_stack(stack_dir):
    launcher = stack_dir / "launcher.py"
    launcher.write_text(LAUNCHER)
    manifest = write_manifest(stack_dir, command=[sys.executable, str(launcher)])
    assert cli(manifest, "deploy").returncode == 0
    return manifest


def fail_env(pair):
    return {**os.environ, "SWIFTDEPLOY_TEST_FAIL": pair}


def test_failed_promote_canary_restores_everything(launcher_stack, stack_dir):
    manifest = launcher_stack
    m = load_manifest(manifest)
    before = files(stack_dir)
    r = cli(manifest, "promote", "canary", env=fail_env("canary:2.0.0"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "app-canary exited before becoming healthy (exit code 3)" in r.stderr
    assert "launcher: refusing to start canary 2.0.0" in r.stderr
    assert files(stack_dir) == before
    assert not (stack_dir / ".swiftdeploy" / "pids" / "app-canary.json").exists()
    response = httpx.get(f"http://127.0.0.1:{m.nginx.port}/", timeout=10)
    assert response.status_code == 200 and response.headers["x-mode"] == "stable"
    assert [r["event"] for r in history.read(stack_dir / "history.jsonl")][-1] == "promote_failed"


def test_failed_promote_stable_restores_everything(launcher_stack, stack_dir):
    manifest = launcher_stack
    assert cli(manifest, "promote", "canary").returncode == 0
    m = load_manifest(manifest)
    before = files(stack_dir)
    pids_before = {p.name: json.loads(p.read_text())["pid"] for p in (stack_dir / ".swiftdeploy/pids").glob("*.json")}
    with background_traffic(m):
        r = cli(manifest, "promote", "stable", "--window", "60", env=fail_env("stable:2.0.0"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "app exited before becoming healthy (exit code 3)" in r.stderr
    assert files(stack_dir) == before  # manifest still in canary mode, generated files as they were
    pids_after = {p.name: json.loads(p.read_text())["pid"] for p in (stack_dir / ".swiftdeploy/pids").glob("*.json")}
    assert pids_after == pids_before  # the old stable and the canary still run
    with httpx.Client(timeout=10) as client:
        seen = {client.get(f"http://127.0.0.1:{m.nginx.port}/").headers["x-mode"] for _ in range(30)}
    assert seen == {"stable", "canary"}
    # rollback is never gated and works from here
    r = cli(manifest, "rollback")
    assert r.returncode == 0, r.stderr
    assert load_manifest(manifest).services.mode == "stable"
    assert cli(manifest, "teardown").returncode == 0
    assert leftovers(stack_dir) == []


class Recording:
    """The real runtime, with the order of the operation's runtime calls written down (calls made inside the
    runtime itself, such as the local blue/green reload, are not)."""

    RECORDED = ("up", "start_track", "stop_track", "reload_proxy")

    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, [], inner.name

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name not in self.RECORDED:
            return attr

        def call(m, *args, **kwargs):
            handover = " all_to_canary" if kwargs.get("all_to_canary") else ""
            self.calls.append(
                f"{name}({m.services.mode} {m.services.version}{handover}{''.join(' ' + a for a in args)})"
            )
            return attr(m, *args, **kwargs)

        return call


def test_promote_stable_order_hands_over_before_replacing_stable(launcher_stack, stack_dir, monkeypatch):
    """The order that keeps promotions from dropping requests on every runtime (ops/promote.py): all routes to the
    canary, stable replaced, final config, canary removed; after a failure, the runtime converges back (`up`)."""
    import swiftdeploy.runtime as runtimes
    from swiftdeploy.ops import promote_stable

    manifest = launcher_stack
    assert cli(manifest, "promote", "canary").returncode == 0
    real = runtimes.get_runtime
    recording = []
    monkeypatch.setattr(runtimes, "get_runtime", lambda m: recording.append(Recording(real(m))) or recording[-1])
    m = load_manifest(manifest)

    def promote():
        with background_traffic(m):
            return promote_stable(manifest, window=60)

    monkeypatch.setenv("SWIFTDEPLOY_TEST_FAIL", "stable:2.0.0")
    with pytest.raises(Exception, match="app exited before becoming healthy"):
        promote()
    assert recording[-1].calls == [
        "reload_proxy(canary 1.0.0 all_to_canary)",
        "start_track(stable 2.0.0 stable)",
        "up(canary 1.0.0)",  # the restored manifest: the old stable and the canary, split again
    ]
    with httpx.Client(timeout=10) as client:
        seen = {client.get(f"http://127.0.0.1:{m.nginx.port}/").headers["x-mode"] for _ in range(30)}
    assert seen == {"stable", "canary"}

    monkeypatch.delenv("SWIFTDEPLOY_TEST_FAIL")
    result = promote()
    assert result.ok and load_manifest(manifest).services.version == "2.0.0"
    assert recording[-1].calls == [
        "reload_proxy(canary 1.0.0 all_to_canary)",
        "start_track(stable 2.0.0 stable)",
        "reload_proxy(stable 2.0.0)",
        "stop_track(stable 2.0.0 canary)",
    ]
    assert cli(manifest, "teardown").returncode == 0
    assert leftovers(stack_dir) == []
