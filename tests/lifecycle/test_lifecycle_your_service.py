"""docs/your-service.md is enough to bring your own service: its Node.js example and manifest, taken from the page
as written (only the ports moved to free ones), deploy on the local runtime on a custom `health_path`, and go
through `promote canary` and a judged `promote stable` - through the CLI, with the real nginx."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
from support import RELAXED_HOST, background_traffic, cli, leftovers, stack_ports

from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import edit_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "your-service.md"


def code_block(language: str) -> str:
    """The first fenced block of `language` in docs/your-service.md."""
    match = re.search(rf"^```{language}\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert match, f"no ```{language} block in {DOC}"
    return match.group(1)


def test_the_documented_node_service_deploys_and_promotes(stack_dir):
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the example of docs/your-service.md is a Node.js service)")
    (stack_dir / "server.js").write_text(code_block("js"), encoding="utf-8")
    port, public, admin = stack_ports(2)
    text = edit_text(
        code_block("yaml"),
        {
            ("services", "port"): port,
            ("nginx", "port"): public,
            ("nginx", "admin_port"): admin,
            ("policy", "window_seconds"): 60,
            # the test machine's own load must not decide the test (the canary thresholds stay the defaults)
            ("policy", "thresholds"): dict(RELAXED_HOST),
        },
    )
    manifest = stack_dir / "manifest.yaml"
    manifest.write_text(text, encoding="utf-8")
    assert load_manifest(manifest).services.health_path == "/health"

    r = cli(manifest, "validate", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    with httpx.Client(timeout=10) as client:
        health = client.get(f"http://127.0.0.1:{admin}/stable/healthz")  # the admin path reaches /health
        assert health.status_code == 200 and health.json()["mode"] == "stable" and health.json()["version"] == "1.0.0"
        answer = client.get(f"http://127.0.0.1:{public}/")
        assert answer.json()["message"] == "hello from node" and answer.headers["x-deployed-by"] == "swiftdeploy"

    r = cli(manifest, "promote", "canary")  # checks that the canary answers mode canary
    assert r.returncode == 0, r.stdout + r.stderr
    with background_traffic(load_manifest(manifest)) as sent:
        r = cli(manifest, "promote", "stable", "--window", "60")
    assert r.returncode == 0, r.stdout + r.stderr  # the gate read both metrics and allowed
    assert sent["by_status"].get("200", 0) == sent["sent"] > 20
    with httpx.Client(timeout=10) as client:
        assert client.get(f"http://127.0.0.1:{admin}/stable/healthz").json()["version"] == "1.1.0"

    assert cli(manifest, "teardown").returncode == 0
    assert leftovers(stack_dir) == []
