"""`swiftdeploy undo` end to end on the local runtime: real nginx, real uvicorn processes, the CLI as a subprocess.

Three real promotions build the release record (1.0.0 -> 2.0.0 -> 3.0.0, the last with a command of its own), then:
`--to` a version not on record (exit 2), a damaged record (exit 1, one clear line, nothing changed), `undo` under
traffic through nginx (every request answered 200), a promotion again, `undo --to` the oldest (skipping the one in
between), and `undo` with nothing left on record (exit 1). History and the audit count every step. A restored
version that fails to start (as the handover canary, or as stable) leaves everything as it was.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import httpx
from support import background_traffic, cli, leftovers, write_manifest

from swiftdeploy import history
from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import set_values

COMMAND = [sys.executable, "-m", "demo_api"]  # the default app, named explicitly: a command the record must carry


def promote(manifest: Path, version: str, command: list[str] | None = None) -> None:
    """A real promotion of canary `version` (under traffic, so the gate can allow)."""
    values: dict[tuple[str, ...], object] = {("canary", "version"): version}
    if command is not None:
        values[("canary", "command")] = command
    set_values(manifest, values)
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    with background_traffic(load_manifest(manifest)):
        r = cli(manifest, "promote", "stable", "--window", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert load_manifest(manifest).services.version == version


def recorded(folder: Path) -> list[str]:
    data = json.loads((folder / ".swiftdeploy" / "releases.json").read_text())
    return [entry["version"] for entry in data["releases"]]


def stable_answer(manifest: Path) -> dict:
    m = load_manifest(manifest)
    with httpx.Client(timeout=10) as client:
        return client.get(f"http://127.0.0.1:{m.nginx.admin_port}/stable/healthz").json()


# One connection per request, as the rollout tests count: a kept-alive connection that an old nginx worker closes
# at a graceful reload is the client's race to retry (docs/operations.md#track-changes-without-dropping-requests).
ONE_PER_REQUEST = {"Connection": "close"}


def undo_under_traffic(manifest: Path, *args: str) -> tuple[object, dict]:
    with background_traffic(load_manifest(manifest), rps=40, headers=ONE_PER_REQUEST) as sent:
        r = cli(manifest, "undo", "--json", *args)
    return r, sent


def assert_nothing_lost(sent: dict) -> None:
    assert sent["sent"] > 40, sent  # traffic ran through the whole undo
    assert sent["by_status"] == {"200": sent["sent"]} and not sent["errors"], sent


def events(folder: Path) -> Counter[str]:
    return Counter(r["event"] for r in history.read(folder / "history.jsonl"))


def test_undo_story(stack_dir):
    manifest = write_manifest(stack_dir, weight=50)

    # nothing promoted yet: nothing to undo, exit 1, nothing recorded
    r = cli(manifest, "undo", "--json")
    assert r.returncode == 1, r.stderr
    assert "nothing to undo: no earlier stable version is on record" in r.stderr and "Traceback" not in r.stderr
    failed = json.loads(r.stdout)
    assert (failed["operation"], failed["ok"], failed["exit_code"]) == ("undo", False, 1)
    assert failed["error"].startswith("nothing to undo") and not failed["blocked"]

    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stderr
    promote(manifest, "2.0.0")
    promote(manifest, "3.0.0", command=COMMAND)
    assert recorded(stack_dir) == ["1.0.0", "2.0.0"]
    assert load_manifest(manifest).services.command == COMMAND  # the promotion made the canary's command stable's
    at_three = manifest.read_text()

    # --to a version that is not on record: exit 2 naming what is, nothing changed
    r = cli(manifest, "undo", "--to", "9.9.9")
    assert r.returncode == 2, r.stderr
    assert "--to 9.9.9: no such version on record (on record, oldest first: 1.0.0, 2.0.0)" in r.stderr
    assert manifest.read_text() == at_three

    # a damaged record: exit 1, one line naming the file and the problem, nothing changed
    record = stack_dir / ".swiftdeploy" / "releases.json"
    good = record.read_text()
    tampered = json.loads(good)
    tampered["releases"][1]["image"] = "evil;rm -rf /"
    for text, why in ((json.dumps(tampered), "releases[1].image"), ("{not json", "not JSON"),
                      (json.dumps({"format": 1, "releases": [{}] * 11}), "at most 10")):  # fmt: skip
        record.write_text(text)
        r = cli(manifest, "undo")
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith(f"error: {record} is not a valid release record") and why in lines[-1], r.stderr
        assert "Traceback" not in r.stderr
        assert manifest.read_text() == at_three
    record.write_text(good)
    assert stable_answer(manifest)["version"] == "3.0.0"

    # undo under traffic: 2.0.0 (no command of its own) is stable again; every request answered
    r, sent = undo_under_traffic(manifest)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["ok"] and answer["operation"] == "undo" and answer["version"] == "2.0.0"
    assert_nothing_lost(sent)
    m = load_manifest(manifest)
    assert (m.services.version, m.services.image, m.services.mode) == ("2.0.0", "swift-deploy-1-node:next", "stable")
    assert m.services.command is None and m.canary_command is None
    assert "# Lifecycle test manifest. This comment must survive every edit." in manifest.read_text()
    assert stable_answer(manifest)["version"] == "2.0.0"
    assert recorded(stack_dir) == ["1.0.0"]
    with httpx.Client(timeout=10) as client:  # the temporary canary is gone
        assert client.get(f"http://127.0.0.1:{m.nginx.admin_port}/canary/healthz").status_code == 503

    # forward again, then --to the oldest, skipping 2.0.0
    promote(manifest, "3.0.0")
    assert recorded(stack_dir) == ["1.0.0", "2.0.0"]
    r, sent = undo_under_traffic(manifest, "--to", "1.0.0")
    assert r.returncode == 0, r.stderr
    assert_nothing_lost(sent)
    m = load_manifest(manifest)
    assert (m.services.version, m.services.image) == ("1.0.0", "swift-deploy-1-node:latest")
    assert stable_answer(manifest)["version"] == "1.0.0"
    assert recorded(stack_dir) == []

    # nothing left on record
    r = cli(manifest, "undo")
    assert r.returncode == 1 and "nothing to undo" in r.stderr and "is empty" in r.stderr, r.stderr

    # history and audit
    seen = events(stack_dir)
    assert seen["release_recorded"] == 3 and seen["undo_started"] == seen["undo_succeeded"] == 2
    assert seen["undo_failed"] == 0  # refusals before the start record nothing
    done = [r for r in history.read(stack_dir / "history.jsonl") if r["event"] == "undo_succeeded"]
    assert [(d["from_version"], d["version"]) for d in done] == [("3.0.0", "2.0.0"), ("3.0.0", "1.0.0")]
    r = cli(manifest, "audit")
    assert r.returncode == 0, r.stderr
    report = (stack_dir / "audit_report.md").read_text()
    assert "| Undos | 2 (3 replaced stable versions recorded by promotions) |" in report
    assert "undo_succeeded" in report

    r = cli(manifest, "teardown", "--clean")
    assert r.returncode == 0, r.stderr
    assert leftovers(stack_dir) == [] and not (stack_dir / ".swiftdeploy").exists()


LAUNCHER = """\
import os, runpy, sys
if os.environ.get("SWIFTDEPLOY_TEST_FAIL") == os.environ["MODE"] + ":" + os.environ["APP_VERSION"]:
    print("launcher: refusing to start " + os.environ["MODE"] + " " + os.environ["APP_VERSION"], file=sys.stderr)
    sys.exit(3)
sys.argv = ["demo_api"]
runpy.run_module("demo_api", run_name="__main__")
"""


def state(folder: Path) -> dict[str, str]:
    names = ["manifest.yaml", "docker-compose.yml", "nginx.conf", ".swiftdeploy/releases.json"]
    return {name: (folder / name).read_text() for name in names}


def test_failed_undo_puts_everything_back(stack_dir):
    """The restored version refuses to start, first as the handover canary, then as stable: each time exit 1, the
    manifest, the generated files and the record exactly as before, 2.0.0 still serving every request."""
    launcher = stack_dir / "launcher.py"
    launcher.write_text(LAUNCHER)
    manifest = write_manifest(stack_dir, command=[sys.executable, str(launcher)])
    assert cli(manifest, "deploy").returncode == 0
    promote(manifest, "2.0.0")
    before = state(stack_dir)
    m = load_manifest(manifest)
    for pair, said in (("canary:1.0.0", "app-canary exited before becoming healthy (exit code 3)"),
                       ("stable:1.0.0", "app exited before becoming healthy (exit code 3)")):  # fmt: skip
        with background_traffic(m, rps=40, headers=ONE_PER_REQUEST) as sent:
            r = cli(manifest, "undo", env={**os.environ, "SWIFTDEPLOY_TEST_FAIL": pair})
        assert r.returncode == 1, r.stdout + r.stderr
        assert said in r.stderr and "launcher: refusing to start" in r.stderr, r.stderr
        assert "could not restore the runtime" not in r.stderr, r.stderr
        assert state(stack_dir) == before
        assert_nothing_lost(sent)
        assert stable_answer(manifest)["version"] == "2.0.0"
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://127.0.0.1:{m.nginx.admin_port}/canary/healthz").status_code == 503
        assert not (stack_dir / ".swiftdeploy" / "pids" / "app-canary.json").exists()
    assert [r["event"] for r in history.read(stack_dir / "history.jsonl")][-2:] == ["undo_started", "undo_failed"]
    assert events(stack_dir)["undo_failed"] == 2
    # and with nothing in the way, the same undo works
    r = cli(manifest, "undo")
    assert r.returncode == 0, r.stderr
    assert stable_answer(manifest)["version"] == "1.0.0"
