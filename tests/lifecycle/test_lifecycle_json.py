"""`--json` on every command that acts, through the console script on the local runtime: deploy, promote canary,
chaos, traffic, a blocked promote stable, rollback, teardown. stdout is one JSON document and nothing else, in
every case: the result with `ok` and `exit_code` when it worked; the error, its exit code, and (blocked) the
decision with every violation when it did not. stderr keeps its one `error:` line.
"""

from __future__ import annotations

import json
import subprocess

from support import background_traffic, cli, leftovers, write_manifest

from swiftdeploy import history
from swiftdeploy.manifest import load_manifest


def answer(result: subprocess.CompletedProcess[str]) -> dict:
    """The JSON document on stdout (json.loads fails on anything else there) and its exit code matches."""
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == result.returncode, (doc, result.stderr)
    return doc


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_every_acting_command_answers_json(stack_dir):
    manifest = write_manifest(stack_dir, weight=50)
    m = load_manifest(manifest)

    deployed = answer(cli(manifest, "deploy", "--json"))
    assert deployed["ok"] is True and deployed["operation"] == "deploy" and deployed["exit_code"] == 0
    assert deployed["decisions"][0]["verdict"] == "allow" and deployed["services"]["app"]["healthy"]

    canary = answer(cli(manifest, "promote", "canary", "--json"))
    assert canary["operation"] == "promote_canary" and canary["ok"]
    assert (canary["mode_from"], canary["mode_to"]) == ("stable", "canary")
    assert canary["decisions"][0]["domain"] == "infrastructure"
    assert canary["services"]["app-canary"]["healthy"]

    fault = answer(cli(manifest, "chaos", "error", "--rate", "0.6", "--json"))
    assert fault["operation"] == "chaos" and fault["ok"] and fault["track"] == "canary"
    assert fault["state"]["mode"] == "error" and fault["state"]["rate"] == 0.6

    # blocked: exit 3, the decision and every violation in the JSON, the manifest untouched
    before = manifest.read_text()
    with background_traffic(m):
        blocked = cli(manifest, "promote", "stable", "--window", "3", "--json")
    assert blocked.returncode == 3, blocked.stderr
    doc = answer(blocked)
    assert doc["ok"] is False and doc["blocked"] is True and doc["interrupted"] is False
    assert doc["operation"] == "promote_stable" and doc["decision"]["verdict"] == "deny"
    rules = {v["rule"] for v in doc["decision"]["violations"]}
    assert "error_rate" in rules, doc["decision"]
    assert all({"observed", "threshold", "unit", "message"} <= set(v) for v in doc["decision"]["violations"])
    assert doc["decisions"] == [doc["decision"]]  # what the operation had decided when it stopped
    assert manifest.read_text() == before
    assert error_lines(blocked.stderr) == [
        "error: canary policy answered deny (embedded engine): "
        f"{len(rules)} violation{'s' if len(rules) != 1 else ''} shown above"
    ]

    recovered = answer(cli(manifest, "chaos", "recover", "--json"))
    assert recovered["ok"] and recovered["state"]["mode"] == "none"

    sent = answer(cli(manifest, "traffic", "--rps", "20", "--duration", "1", "--json"))
    assert sent["operation"] == "traffic" and sent["ok"] and sent["sent"] == 20
    assert sum(sent["by_status"].values()) == sent["answered"]

    rolled = answer(cli(manifest, "rollback", "--json"))
    assert rolled["operation"] == "rollback" and rolled["ok"] and rolled["mode_to"] == "stable"
    assert "app-canary" not in rolled["services"]

    down = answer(cli(manifest, "teardown", "--json"))
    assert down["operation"] == "teardown" and down["ok"] and len(down["details"]) == 2, down
    assert leftovers(stack_dir) == []

    # failures are JSON too: nothing answers chaos now (exit 1), an option out of range (exit 2)
    nothing = cli(manifest, "chaos", "slow", "--duration", "1", "--json")
    assert nothing.returncode == 1
    doc = answer(nothing)
    assert doc["ok"] is False and doc["blocked"] is False and "no answer" in doc["error"] and doc["hint"]
    assert len(error_lines(nothing.stderr)) == 1

    too_fast = cli(manifest, "traffic", "--rps", "1000", "--json")
    assert too_fast.returncode == 2 and answer(too_fast)["error"].startswith("--rps must be between")

    events = [r["event"] for r in history.read(m.history_path)]
    assert "promote_blocked" in events and events[-1] == "teardown"


def test_a_failed_operation_answers_json_with_its_exit_code(stack_dir):
    manifest = write_manifest(stack_dir)
    # no stack: promote canary needs a healthy stable app (exit 1), after its start was recorded
    failed = cli(manifest, "promote", "canary", "--json")
    assert failed.returncode == 1
    doc = answer(failed)
    assert doc["operation"] == "promote_canary" and doc["ok"] is False and doc["decision"] is None
    assert "is not healthy" in doc["error"] and doc["hint"] == "run `swiftdeploy deploy` first"
    assert doc["runtime"] == "local" and doc["mode_to"] == "canary"  # the partial result: what it was doing
    assert error_lines(failed.stderr) == [f"error: {doc['error']} ({doc['hint']})"]

    # a missing manifest: exit 2, still JSON
    missing = cli(stack_dir / "nowhere.yaml", "rollback", "--json")
    assert missing.returncode == 2
    doc = answer(missing)
    assert doc == {
        "operation": "rollback",
        "ok": False,
        "exit_code": 2,
        "error": doc["error"],
        "hint": doc["hint"],
        "blocked": False,
        "interrupted": False,
        "decision": None,
    }
    assert "nowhere.yaml" in doc["error"]
