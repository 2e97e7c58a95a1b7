"""`rollout` and `abort` end to end on the local runtime: real nginx, real uvicorn processes, the CLI as a subprocess
(docs/operations.md#progressive-delivery).

A healthy three-step rollout completes under background traffic with every request answered 200 (none lost at a
step change) and stable runs the new version; a canary that starts failing (`chaos error`) at step 2 is rolled back
by itself (exit 3, the violations with their evidence); `abort` from a second process stops a running rollout and a
running `promote stable` (exit 3 "aborted by ..."); an inconclusive step pauses (exit 5), `rollout` resumes it,
`abort` ends it; Ctrl-C rolls back. The windows are short (canary thresholds relaxed so an allow needs few requests);
no assertion depends on timing.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import SWIFTDEPLOY, background_traffic, cli, write_manifest

from swiftdeploy import history
from swiftdeploy.errors import OperationFailed
from swiftdeploy.manifest import load_manifest, parse_manifest
from swiftdeploy.ops.abort import AbortRequest
from swiftdeploy.ops.rollout import read_record, record_path

# An allow needs few clean canary requests (20 % counts as bad, 10 at least); a deny needs the usual confidence.
FAST = {"bad_error_rate_percent": 20, "bad_slow_percent": 20, "min_requests": 10}
# One connection per request: a request without an answer is then the stack's doing, never the keep-alive race of a
# graceful reload that a pooled client can hit (docs/operations.md#track-changes-without-dropping-requests).
ONE_PER_REQUEST = {"Connection": "close"}


def rollout_manifest(folder: Path, *, steps: str = "[10, 25, 50]", analysis: str = "{max_step_seconds: 30}",
                     **thresholds: float) -> Path:  # fmt: skip
    manifest = write_manifest(folder, weight=10, thresholds={**FAST, **thresholds})
    text = manifest.read_text().replace("  weight: 10\n", f"  weight: 10\n  steps: {steps}\n  analysis: {analysis}\n")
    manifest.write_text(text)
    return manifest


def deploy(manifest: Path) -> None:
    r = cli(manifest, "deploy", "--timeout", "60")
    assert r.returncode == 0, r.stderr


class Background:
    """`swiftdeploy rollout --json` (or any command) as a process whose stdout lines are read as they come."""

    def __init__(self, manifest: Path, *args: str) -> None:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [SWIFTDEPLOY, "-m", str(manifest), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self._errors = threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True)
        self._errors.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, predicate: Any, timeout: float = 90) -> dict[str, Any]:
        """The first JSON line (a streamed record) for which predicate(record) holds."""
        while True:
            line = self.lines.get(timeout=timeout)
            assert line is not None, f"the process ended first: {self.seen}"
            self.seen.append(line)
            record = json.loads(line)
            if predicate(record):
                return record

    def finish(self, timeout: float = 120) -> tuple[int, str, list[dict[str, Any]]]:
        """(exit code, stderr, every JSON line of stdout) once it has ended."""
        self.proc.wait(timeout=timeout)
        self._errors.join(timeout=30)
        stderr = "".join(self.stderr)
        while True:
            line = self.lines.get(timeout=30)
            if line is None:
                break
            self.seen.append(line)
        return self.proc.returncode, stderr, [json.loads(line) for line in self.seen]


def events(folder: Path) -> list[dict[str, Any]]:
    return list(history.read(folder / "history.jsonl"))


def canary_gone(manifest: Path) -> bool:
    m = load_manifest(manifest)
    with httpx.Client(timeout=10) as client:
        return client.get(f"http://127.0.0.1:{m.nginx.admin_port}/canary/healthz").status_code == 503


def public_versions(manifest: Path, n: int = 10) -> set[tuple[str, str]]:
    m = load_manifest(manifest)
    with httpx.Client(timeout=10) as client:
        answers = [client.get(f"http://127.0.0.1:{m.nginx.port}/") for _ in range(n)]
    assert all(a.status_code == 200 for a in answers)
    return {(a.headers["x-mode"], a.headers["x-app-version"]) for a in answers}


def assert_rolled_back(manifest: Path, folder: Path) -> None:
    """mode stable (version as before), canary gone, all traffic on stable, no rollout record left."""
    m = load_manifest(manifest)
    assert m.services.mode == "stable" and m.services.version == "1.0.0"
    assert canary_gone(manifest)
    assert public_versions(manifest) == {("stable", "1.0.0")}
    assert not (folder / ".swiftdeploy" / "rollout.json").exists()
    assert not (folder / ".swiftdeploy" / "abort.json").exists()


def assert_none_lost(sent: dict[str, Any]) -> None:
    assert sent["sent"] > 0 and sent["errors"] == {}, sent
    assert sent["answered"] == sent["sent"] and sent["by_status"] == {"200": sent["sent"]}, sent


# --- the stories -----------------------------------------------------------------------------------------------


def test_healthy_three_step_rollout_completes_and_loses_no_request(stack_dir):
    manifest = rollout_manifest(stack_dir)
    deploy(manifest)
    with background_traffic(load_manifest(manifest), rps=40, duration=150, headers=ONE_PER_REQUEST) as sent:
        r = cli(manifest, "rollout", "--json", timeout=200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]  # JSON Lines: every line one object
    streamed = [(x["event"], x.get("step"), x.get("weight"), x.get("verdict")) for x in lines[:-1]]
    assert streamed == [
        ("rollout_started", None, None, None),
        ("rollout_step", 1, 10, None),
        ("rollout_verdict", 1, 10, "allow"),
        ("rollout_step", 2, 25, None),
        ("rollout_verdict", 2, 25, "allow"),
        ("rollout_step", 3, 50, None),
        ("rollout_verdict", 3, 50, "allow"),
        ("rollout_succeeded", None, None, None),
    ]
    final = lines[-1]
    assert final["operation"] == "rollout" and final["ok"] and final["exit_code"] == 0
    assert all(x["basis"] for x in lines[:-1] if x.get("event") == "rollout_verdict")  # what each allow rests on
    assert_none_lost(sent)
    assert sent["by_mode"].get("canary", 0) > 0  # the canary did take traffic on the way
    m = load_manifest(manifest)
    assert (m.services.mode, m.services.image, m.services.version) == ("stable", "swift-deploy-1-node:next", "2.0.0")
    assert public_versions(manifest) == {("stable", "2.0.0")} and canary_gone(manifest)
    assert not (stack_dir / ".swiftdeploy" / "rollout.json").exists()
    recorded = [(x["event"], x.get("step")) for x in events(stack_dir) if x["event"].startswith("rollout_")]
    assert recorded == [(e, s) for e, s, _w, _v in streamed]
    gates = [x for x in events(stack_dir) if x.get("event") == "policy_decision" and x.get("gate") == "rollout"]
    assert [g["domain"] for g in gates] == ["infrastructure", "canary", "canary", "canary"]

    # audit: the rollout as one section, its steps with weights and verdicts
    r = cli(manifest, "audit")
    assert r.returncode == 0, r.stderr
    report = (stack_dir / "audit_report.md").read_text()
    assert "## Rollouts" in report
    section = report.split("## Rollouts", 1)[1]
    for weight in ("10%", "25%", "50%"):
        assert weight in section
    assert "succeeded" in section and "allow" in section


# A hook that writes its SWIFTDEPLOY_* variables to hook-env/<event>.json (the rollout's hooks, below).
ENV_HOOK = """\
import json, os, pathlib
out = pathlib.Path("hook-env")
out.mkdir(exist_ok=True)
seen = {k: v for k, v in os.environ.items() if k.startswith("SWIFTDEPLOY_")}
(out / (os.environ["SWIFTDEPLOY_EVENT"] + ".json")).write_text(json.dumps(seen))
"""


def test_error_canary_at_step_2_is_rolled_back_automatically(stack_dir):
    # Each step needs 60 clean canary requests: step 2 (25 % of 40 req/s) takes seconds, time to break it.
    manifest = rollout_manifest(stack_dir, min_requests=60)
    (stack_dir / "env_hook.py").write_text(ENV_HOOK)
    hook = f"[['{sys.executable}', env_hook.py]]"
    manifest.write_text(manifest.read_text() + f"hooks:\n  pre_promote: {hook}\n  post_rollback: {hook}\n")
    deploy(manifest)
    with background_traffic(load_manifest(manifest), rps=40, duration=150, headers=ONE_PER_REQUEST) as sent:
        run = Background(manifest, "rollout", "--json")
        run.wait_for(lambda x: x.get("event") == "rollout_step" and x["step"] == 2)
        r = cli(manifest, "chaos", "error", "--rate", "0.5")
        assert r.returncode == 0, r.stderr
        code, stderr, lines = run.finish()
    assert code == 3, stderr
    assert "canary: deny" in stderr and "error_rate" in stderr and "confidence" in stderr  # every violation, evidence
    assert "canary policy answered deny" in stderr and "rolled back at step 2 of 3 (25%)" in stderr
    verdicts = [(x["step"], x["verdict"]) for x in lines if x.get("event") == "rollout_verdict"]
    assert verdicts == [(1, "allow"), (2, "deny")], [x.get("event") for x in lines]
    assert [x for x in lines if x.get("event") == "rollout_verdict"][-1]["violations"]
    final = lines[-1]
    assert final["exit_code"] == 3 and final["blocked"] and final["decision"]["verdict"] == "deny"
    assert_rolled_back(manifest, stack_dir)
    assert sent["by_status"].get("500", 0) > 0  # the fault was real
    assert set(sent["by_status"]) <= {"200", "500"} and sent["errors"] == {}  # and nothing was dropped
    recorded = {x["event"]: x for x in events(stack_dir)}
    assert recorded["rollout_rolled_back"]["reason"] == "deny" and recorded["rollout_rolled_back"]["step"] == 2
    assert recorded["rollout_blocked"]["rolled_back"] is True
    # the hooks: pre_promote before the canary took traffic (at the first step's weight), post_rollback after the
    # automatic rollback, saying why; the last step's pre_promote (weight 100) never ran
    pre = json.loads((stack_dir / "hook-env" / "pre_promote.json").read_text())
    got = (pre["SWIFTDEPLOY_OPERATION"], pre["SWIFTDEPLOY_WEIGHT"], pre["SWIFTDEPLOY_VERDICT"])
    assert got == ("rollout", "10", "allow")
    post = json.loads((stack_dir / "hook-env" / "post_rollback.json").read_text())
    assert (post["SWIFTDEPLOY_OPERATION"], post["SWIFTDEPLOY_VERDICT"]) == ("rollout", "deny")
    runs = [(x["hook"], x["ok"]) for x in events(stack_dir) if x["event"] == "hook_run"]
    assert runs == [("pre_promote", True), ("post_rollback", True)]


def test_abort_from_a_second_process_rolls_a_running_rollout_back(stack_dir):
    # 400 clean canary requests per step: step 1 cannot finish before the abort.
    manifest = rollout_manifest(stack_dir, min_requests=400, analysis="{max_step_seconds: 120}")
    deploy(manifest)
    with background_traffic(load_manifest(manifest), rps=40, duration=120, headers=ONE_PER_REQUEST) as sent:
        run = Background(manifest, "rollout", "--json")
        run.wait_for(lambda x: x.get("event") == "rollout_step" and x["step"] == 1)
        r = cli(manifest, "abort")
        code, stderr, lines = run.finish()
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "rollout (pid" in r.stdout
        and "aborted by" in r.stdout
        and "removed at step 1 (10%), all traffic on stable" in r.stdout
    )
    assert code == 3, stderr
    assert "rollout aborted by" in stderr
    assert lines[-1]["exit_code"] == 3 and not lines[-1]["ok"]
    assert_rolled_back(manifest, stack_dir)
    assert_none_lost(sent)
    aborted = [x for x in events(stack_dir) if x.get("event") == "rollout_aborted"]
    assert len(aborted) == 1 and "@" in aborted[0]["by"] and aborted[0]["step"] == 1

    # with nothing running and nothing paused: abort says so, exit 1
    r = cli(manifest, "abort")
    assert r.returncode == 1 and "nothing to abort" in r.stderr


def test_abort_stops_a_running_promote_stable(stack_dir):
    manifest = rollout_manifest(stack_dir)
    deploy(manifest)
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    promote = Background(manifest, "promote", "stable", "--window", "120")  # no traffic: it keeps watching
    status: dict[str, Any] = {}
    for _ in range(200):  # until it holds the lock and watches
        r = cli(manifest, "lock", "status")
        if "held" in r.stdout and "promote stable" in r.stdout:
            status["held"] = True
            break
    assert status, r.stdout
    r = cli(manifest, "abort")
    code, stderr, _lines = promote.finish()
    assert r.returncode == 0, r.stdout + r.stderr
    assert code == 3 and "promote stable aborted by" in stderr, stderr
    assert_rolled_back(manifest, stack_dir)
    recorded = [x["event"] for x in events(stack_dir)]
    assert "promote_aborted" in recorded and "promote_failed" not in recorded


def test_inconclusive_step_pauses_resumes_and_abort_ends_it(stack_dir):
    manifest = rollout_manifest(stack_dir, steps="[20, 40]", analysis="{max_step_seconds: 2}")
    deploy(manifest)
    # no traffic: the first step stays inconclusive -> paused (exit 5), canary kept at 20 %
    r = cli(manifest, "rollout")
    assert r.returncode == 5, r.stdout + r.stderr
    assert "rollout paused at step 1 of 2 (20% to the canary)" in r.stderr and "canary: inconclusive" in r.stderr
    m = load_manifest(manifest)
    record = read_record(m)
    assert record is not None and (record.state, record.step, record.weight) == ("paused", 0, 20)
    assert m.services.mode == "canary" and not canary_gone(manifest)
    assert "20% canary;" in (stack_dir / ".swiftdeploy" / "nginx" / "nginx.conf").read_text()

    # rollout again: resumes at step 1 (still no traffic: paused again)
    r = cli(manifest, "rollout", "--json")
    assert r.returncode == 5, r.stderr
    started = json.loads(r.stdout.splitlines()[0])
    assert started["event"] == "rollout_started" and started["resumed"] is True and started["from_step"] == 1

    # abort with nothing running: the paused rollout is rolled back under the lock
    r = cli(manifest, "abort")
    assert r.returncode == 0, r.stderr
    assert "aborted the rollout paused at step 1 (20%)" in r.stdout
    assert_rolled_back(manifest, stack_dir)
    kinds = [x["event"] for x in events(stack_dir) if x["event"].startswith("rollout_")]
    assert kinds.count("rollout_paused") == 2 and kinds[-2:] == ["rollout_aborted", "rollout_rolled_back"]


def test_ctrl_c_rolls_the_rollout_back(stack_dir):
    manifest = rollout_manifest(stack_dir, min_requests=400, analysis="{max_step_seconds: 120}")
    deploy(manifest)
    run = Background(manifest, "rollout", "--json")
    run.wait_for(lambda x: x.get("event") == "rollout_step")
    run.proc.send_signal(signal.SIGINT)
    code, stderr, lines = run.finish()
    assert code == 130, stderr
    assert "interrupted: rollout stopped by Ctrl-C" in stderr and "nothing of the stack runs" not in stderr
    assert lines[-1]["interrupted"] is True
    assert_rolled_back(manifest, stack_dir)
    recorded = {x["event"]: x for x in events(stack_dir)}
    assert recorded["rollout_rolled_back"]["reason"] == "interrupted" and "rollout_interrupted" in recorded


def test_a_killed_rollout_resumes_from_its_recorded_step(stack_dir):
    manifest = rollout_manifest(stack_dir, steps="[20, 40]", analysis="{max_step_seconds: 60}", min_requests=400)
    deploy(manifest)
    run = Background(manifest, "rollout", "--json")
    run.wait_for(lambda x: x.get("event") == "rollout_step" and x["step"] == 1)
    run.proc.kill()  # SIGKILL: no cleanup, no record closed
    run.finish()
    record = read_record(load_manifest(manifest))
    assert record is not None and (record.state, record.step, record.weight) == ("running", 0, 20)
    assert not canary_gone(manifest)  # the canary still runs: only the rollout process died
    # a new rollout takes the lock over and continues at the recorded step; abort ends it (both in the background)
    again = Background(manifest, "rollout", "--json")
    started = again.wait_for(lambda x: x.get("event") == "rollout_started")
    assert started["resumed"] is True and started["from_step"] == 1
    again.wait_for(lambda x: x.get("event") == "rollout_step")
    r = cli(manifest, "abort")
    code, stderr, _lines = again.finish()
    assert r.returncode == 0 and code == 3, r.stderr + stderr
    assert "took over the lock left by an interrupted run" in stderr
    assert_rolled_back(manifest, stack_dir)


# --- the parts without processes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "problem"),
    [
        ("{steps: [10, 10]}", "must increase strictly"),
        ("{steps: [50, 25]}", "must increase strictly"),
        ("{steps: [0, 10]}", "greater than or equal to 1"),
        ("{steps: [10, 100]}", "less than or equal to 99"),
        ("{steps: [true]}", "must be an integer, not true"),
        ("{steps: []}", "at least 1 item"),
        ("{steps: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}", "at most 10 items"),
        ("{analysis: {max_step_seconds: 2h}}", "less than or equal to 3600"),
        ("{analysis: {on_inconclusive: wait}}", "'pause' or 'rollback'"),
        ("{analysis: {rollback_on_failure: 'no'}}", "valid boolean"),
        ("{analysis: {max_steps: 3}}", "max_step_seconds"),  # a typo: did you mean
    ],
)
def test_manifest_refuses_bad_steps_and_analysis(canary: str, problem: str) -> None:
    from swiftdeploy.errors import ManifestError

    with pytest.raises(ManifestError, match="canary") as caught:
        parse_manifest(f"services: {{image: a:1}}\ncanary: {canary}\n")
    assert problem in str(caught.value)


def test_manifest_steps_default_to_canary_weight() -> None:
    m = parse_manifest("services: {image: a:1}\ncanary: {weight: 15}\n")
    assert m.canary.rollout_steps == [15]
    assert (m.canary.analysis.on_inconclusive, m.canary.analysis.rollback_on_failure) == ("pause", True)


def test_a_record_not_to_be_trusted_is_refused(tmp_path: Path) -> None:
    m = load_manifest(rollout_manifest(tmp_path))
    path = record_path(m)
    path.parent.mkdir(parents=True)
    good = {
        "project": m.project_name, "image": "x:1", "version": "2", "steps": [10, 25], "step": 1, "weight": 25,
        "state": "paused", "reason": "inconclusive", "started": "t", "updated": "t", "pid": 1, "format": 1,
    }  # fmt: skip
    path.write_text(json.dumps(good))
    assert read_record(m).weight == 25
    for bad, problem in [
        ('{"project": ', "is not JSON"),
        (json.dumps({**good, "project": "other"}), "is of project 'other'"),
        (json.dumps({**good, "weight": 10}), "do not name one of its steps"),
        (json.dumps({**good, "state": "done"}), "field 'state'"),
        (json.dumps({**good, "extra": 1}), "has the fields"),
        (" " * 20000, "more than the limit of"),
    ]:
        path.write_text(bad)
        with pytest.raises(OperationFailed, match="not trusted") as caught:
            read_record(m)
        assert problem in caught.value.message and "swiftdeploy abort" in str(caught.value)


def test_an_abort_request_must_be_well_formed() -> None:
    ok = {"id": "a", "by": "me@host", "at": "t", "pid": 42, "operation": "rollout"}
    assert AbortRequest.parse(ok).describe() == "aborted by me@host at t"
    for bad in [
        [],
        {**ok, "pid": True},
        {**ok, "pid": 0},
        {**ok, "by": ""},
        {k: v for k, v in ok.items() if k != "at"},
    ]:
        assert AbortRequest.parse(bad) is None


def test_the_live_view_shows_the_step_both_tracks_and_the_evidence() -> None:
    from rich.console import Console

    from swiftdeploy.cli.output import RolloutView, render_rollout
    from swiftdeploy.judge import Look, canary_facts, thresholds_of
    from swiftdeploy.policy import evaluate

    canary = {"requests": 120, "errors": 1, "error_rate_percent": 0.833, "p50_ms": 3.0, "p99_ms": 41.5}
    stable = {"requests": 480, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 2.0, "p99_ms": 20.0}
    facts = canary_facts(canary, stable, 12.0, thresholds_of(None), method="sequential")
    view = RolloutView("rollout 2.0.0 (demo:2)")
    view.update({"event": "rollout_started", "steps": [10, 25, 50], "max_step_seconds": 60})
    view.update({"event": "rollout_step", "step": 1, "weight": 10})
    view.update({"event": "rollout_verdict", "step": 1, "verdict": "allow"})
    view.update({"event": "rollout_step", "step": 2, "weight": 25})
    view.look = Look(elapsed=12.0, facts=facts, decision=evaluate(None, "canary", facts))
    console = Console(width=160, record=True, color_system=None)
    console.print(render_rollout(view))
    text = console.export_text()
    assert "rollout 2.0.0 (demo:2)" in text and "10% ✓ → 25% … → 50%" in text
    assert "step 2 of 3 · 25% to the canary" in text and "s left" in text
    assert "canary" in text and "120" in text and "0.83" in text and "41.5" in text  # requests, error %, P99
    assert "stable" in text and "480" in text
    assert "120 canary requests, 1 errors" in text  # the watch's evidence line
    assert view.line().startswith("step 2 of 3 (25%): 12 s of 60 s: 120 canary requests")
