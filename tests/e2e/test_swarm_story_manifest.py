"""Fast guard for `make e2e-swarm` (scripts/e2e/swarm_story.py): its manifest stays valid for the swarm runtime and
its stack file stays a valid Compose file in both modes, so a schema change shows up in the unit tests, not only on
the namespace cluster.

Real components: the manifest loader, the stack generator, the Compose v2 binary (`config`).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import edit_text
from swiftdeploy.render.stack import render_stack

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_ENV = {  # what scripts/e2e_swarm.sh exports from cluster.env
    "DOCKER_HOST": "unix:///tmp/sdw.test/m/docker.sock",
    "E2E_SWARM_DIR": "/tmp/sdw.test",
    "E2E_SWARM_MANAGER_ADDR": "172.29.1.11",
    "E2E_SWARM_NODES": "manager worker1 worker2",
    "E2E_SWARM_MANAGER_HOST": "unix:///tmp/sdw.test/m/docker.sock",
    "E2E_SWARM_WORKER1_HOST": "unix:///tmp/sdw.test/w1/docker.sock",
    "E2E_SWARM_WORKER2_HOST": "unix:///tmp/sdw.test/w2/docker.sock",
    "E2E_STABLE_IMAGE": "swiftdeploy-demo:1.0.0",
    "E2E_CANARY_IMAGE": "swiftdeploy-demo:2.0.0",
    "E2E_NGINX_IMAGE": "swiftdeploy-nginx:e2e",
    "E2E_OPA": "/opt/opa/bin/opa",
}


@pytest.fixture
def story(tmp_path, monkeypatch):
    for name, value in CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(ROOT / "scripts" / "e2e"))  # it imports the docker story's helpers
    spec = importlib.util.spec_from_file_location("e2e_swarm_story", ROOT / "scripts" / "e2e" / "swarm_story.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delitem(sys.modules, "story", raising=False)
    s = module.SwarmStory(argparse.Namespace(workdir=str(tmp_path), swiftdeploy="swiftdeploy", timings="t.tsv"))
    s.write_manifest()
    return module, s


def test_swarm_story_manifest_is_a_cluster_manifest(story):
    module, s = story
    m = load_manifest(s.manifest)
    assert m.runtime == "swarm" and m.policy.engine == "opa"
    assert (m.services.replicas, m.canary.replicas) == (3, 2)
    assert m.swarm.docker_host == CLUSTER_ENV["DOCKER_HOST"]
    assert m.opa.binary == CLUSTER_ENV["E2E_OPA"] and m.opa.port == s.opa_port
    assert (m.services.image, m.canary_image, m.nginx.image) == (
        "swiftdeploy-demo:1.0.0",
        "swiftdeploy-demo:2.0.0",
        "swiftdeploy-nginx:e2e",
    )
    assert m.nginx.port == s.public_port and s.public_port != s.opa_port
    assert m.project_name == module.PROJECT and m.canary.steps == [25, 50, 75]
    # Only the host thresholds are relaxed; the canary gate keeps the policy defaults.
    assert set(m.policy.thresholds.overrides()) == {"max_cpu_load", "min_disk_free_gb", "max_memory_used_percent"}


@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_swarm_story_stack_is_valid_compose(story, tmp_path, compose_binary, mode):
    _, s = story
    if mode == "canary":
        s.manifest.write_text(edit_text(s.manifest.read_text(), {("services", "mode"): "canary"}))
    m = load_manifest(s.manifest)
    (tmp_path / "docker-stack.yml").write_text(render_stack(m))
    done = subprocess.run(
        [str(compose_binary), "-f", str(tmp_path / "docker-stack.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = {"app", "nginx"} | ({"app-canary"} if mode == "canary" else set())
    assert set(done.stdout.split()) == expected


def test_the_node_loss_is_seen_in_status_only_when_a_track_runs_short(story):
    module, _ = story
    full = "  stable 1.0.0   up 0m49s, 3 replicas   none\n  canary 2.0.0   up 0m24s, 2 replicas   none\n"
    assert not module.shows_loss(full)
    assert module.shows_loss(full.replace("3 replicas", "2 replicas"))
    assert module.shows_loss(full.replace("2 replicas", "1 replica"))
    assert module.shows_loss("  canary 2.0.0   down   none\n")
