"""End to end on the local runtime: real nginx, real uvicorn processes, the CLI as a subprocess.

The demo story step by step, asserting exit codes, the manifest after each step (comments kept), the traffic
split and pinning, the listeners' separation, that a blocked promotion changes nothing, history, and that
teardown leaves no process behind.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from pathlib import Path

import httpx
from support import background_traffic, cli, leftovers, write_manifest

from swiftdeploy import history
from swiftdeploy.manifest import load_manifest


def modes(url: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            response = client.get(url, headers=headers)
            assert response.status_code == 200, response.text
            assert response.headers["x-deployed-by"] == "swiftdeploy"
            seen[response.headers["x-mode"]] += 1
    return seen


def added_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]


def frozen_state(folder: Path) -> dict[str, str]:
    """Manifest, generated files and pid files: what a blocked promotion must not change."""
    names = ["manifest.yaml", "docker-compose.yml", "nginx.conf", ".swiftdeploy/nginx/nginx.conf"]
    state = {name: (folder / name).read_text() for name in names}
    for pid_file in sorted((folder / ".swiftdeploy" / "pids").glob("*.json")):
        state[pid_file.name] = pid_file.read_text()
    for path in sorted((folder / "policy-bundle").rglob("*")):  # the bundle has a system/ folder (authz)
        if path.is_file():
            state[str(path.relative_to(folder))] = path.read_text()
    return state


def promote_stable_under_traffic(manifest: Path, window: float = 60) -> tuple[object, dict]:
    with background_traffic(load_manifest(manifest)) as sent:
        result = cli(manifest, "promote", "stable", "--window", str(window))
    return result, sent


def test_local_story(stack_dir):
    manifest = write_manifest(stack_dir, weight=50)
    original = manifest.read_text()
    m = load_manifest(manifest)
    public = f"http://127.0.0.1:{m.nginx.port}"
    admin = f"http://127.0.0.1:{m.nginx.admin_port}"

    # deploy --json: JSON only on stdout, everything healthy, manifest untouched, generated files written
    r = cli(manifest, "deploy", "--json", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] and result["operation"] == "deploy" and result["runtime"] == "local"
    assert result["services"]["app"]["healthy"] and result["services"]["nginx"]["healthy"]
    assert result["decisions"][0]["domain"] == "infrastructure" and result["decisions"][0]["verdict"] == "allow"
    assert manifest.read_text() == original
    for name in ("docker-compose.yml", "nginx.conf", "policy-bundle/data.json"):
        assert (stack_dir / name).is_file(), name
    assert modes(public + "/", 10) == {"stable": 10}

    # the public listener hides metrics and chaos; the admin listener serves them
    with httpx.Client(timeout=10) as client:
        for path in ("/metrics", "/chaos", "/stable/metrics", "/canary/chaos"):
            response = client.get(public + path)
            assert response.status_code == 404, path
            assert response.json()["error"] == "not found"
            assert response.headers["x-deployed-by"] == "swiftdeploy"
        metrics = client.get(admin + "/stable/metrics")
        assert metrics.status_code == 200 and "http_requests_total" in metrics.text
        assert client.get(admin + "/stable/chaos").json()["mode"] == "none"
        no_canary = client.get(admin + "/canary/healthz")
        assert no_canary.status_code == 503 and no_canary.json()["error"] == "no canary track running"

    # promote canary: one line added to the manifest, nothing else touched
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    assert added_lines(original, manifest.read_text()) == ["+   mode: canary"]
    assert load_manifest(manifest).services.mode == "canary"
    with httpx.Client(timeout=10) as client:
        canary_health = client.get(admin + "/canary/healthz").json()
    assert canary_health["mode"] == "canary" and canary_health["version"] == "2.0.0"

    # the split: weight 50 -> both tracks answer; X-Canary pins a track
    split = modes(public + "/", 40)
    assert split["stable"] > 0 and split["canary"] > 0, split
    assert modes(public + "/", 20, {"X-Canary": "always"}) == {"canary": 20}
    assert modes(public + "/", 20, {"X-Canary": "never"}) == {"stable": 20}

    # chaos on the stable track is refused (exit 2); on the canary it works
    r = cli(manifest, "chaos", "error", "--rate", "0.5", "--track", "stable")
    assert r.returncode == 2 and "refused" in r.stderr
    r = cli(manifest, "chaos", "error", "--rate", "0.5")
    assert r.returncode == 0, r.stderr

    # promote stable with a failing canary: exit 3, every violation with observed vs threshold, nothing changed
    before = frozen_state(stack_dir)
    r, sent = promote_stable_under_traffic(manifest)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "error_rate" in r.stderr and "at 99.5% confidence) vs 1%" in r.stderr
    assert "canary policy answered deny" in r.stderr
    assert sent["by_status"].get("500", 0) > 0
    assert frozen_state(stack_dir) == before

    # recover, then the same promotion is allowed
    r = cli(manifest, "chaos", "recover")
    assert r.returncode == 0, r.stderr
    r, sent = promote_stable_under_traffic(manifest)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sent["by_status"].get("200", 0) > 20
    text = manifest.read_text()
    assert "# Lifecycle test manifest. This comment must survive every edit." in text
    assert "# stable image" in text and "# the candidate" in text and "# host thresholds relaxed" in text
    assert sorted(added_lines(original, text)) == sorted(
        [
            "-   image: swift-deploy-1-node:latest   # stable image",
            "+   image: swift-deploy-1-node:next     # stable image",
            "-   version: 1.0.0",
            "+   version: 2.0.0",
            "+   mode: stable",
        ]
    )
    with httpx.Client(timeout=10) as client:
        response = client.get(public + "/")
        assert response.headers["x-mode"] == "stable" and response.headers["x-app-version"] == "2.0.0"
        assert client.get(admin + "/canary/healthz").status_code == 503
    assert modes(public + "/", 20) == {"stable": 20}

    # history: every step and every decision
    records = list(history.read(stack_dir / "history.jsonl"))
    events = Counter(r["event"] for r in records)
    assert events["deploy_succeeded"] == 1 and events["promote_blocked"] == 1 and events["promote_succeeded"] == 2
    assert events["chaos"] == 2 and events["policy_decision"] == 4  # deploy, promote canary, 2x promote stable
    blocked = [r for r in records if r["event"] == "policy_decision" and r["verdict"] == "deny"]
    assert blocked and blocked[0]["domain"] == "canary" and blocked[0]["violations"]
    changes = [(r["mode_from"], r["mode_to"]) for r in records if "mode_to" in r]
    assert changes == [("stable", "canary"), ("canary", "stable")]

    # teardown: nothing left behind
    r = cli(manifest, "teardown", "--clean")
    assert r.returncode == 0, r.stderr
    assert leftovers(stack_dir) == []
    assert not (stack_dir / ".swiftdeploy").exists()
    assert not (stack_dir / "nginx.conf").exists() and not (stack_dir / "docker-compose.yml").exists()
    assert (stack_dir / "history.jsonl").exists()
    assert manifest.read_text() == text
