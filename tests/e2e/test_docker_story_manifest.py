"""Fast guard for `make e2e-docker` (scripts/e2e/story.py): its manifest stays valid and its stack stays a valid
Compose file in both modes, so a schema change shows up in the unit tests, not only in the real-engine run.

Real components: the manifest loader, the generators, the Compose v2 binary (`config`). The story's stack includes
the OPA service (policy.engine opa), on the image the e2e run builds from the pinned binary.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
from pathlib import Path

import pytest

from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import edit_text
from swiftdeploy.manifest.model import DEFAULT_OPA_IMAGE
from swiftdeploy.render import render_compose, render_nginx

ROOT = Path(__file__).resolve().parents[2]


def _story_module():
    spec = importlib.util.spec_from_file_location("e2e_story", ROOT / "scripts" / "e2e" / "story.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def story(tmp_path):
    module = _story_module()
    args = argparse.Namespace(
        workdir=str(tmp_path),
        swiftdeploy="swiftdeploy",
        stable_image="swiftdeploy-demo:1.0.0",
        canary_image="swiftdeploy-demo:2.0.0",
        nginx_image="swiftdeploy-nginx:e2e",
        opa_image=DEFAULT_OPA_IMAGE,
        timings=str(tmp_path / "timings.tsv"),
    )
    s = module.Story(args)
    s.write_manifest()
    return module, s


def test_story_manifest_is_valid_and_names_the_local_images(story):
    module, s = story
    m = load_manifest(s.manifest)
    assert m.runtime == "docker" and m.policy.engine == "opa"
    assert m.opa.image == DEFAULT_OPA_IMAGE and m.opa.port == s.opa_port  # the image e2e_docker.sh tags
    assert m.project_name == module.PROJECT and m.network.name == module.NETWORK
    assert (m.services.image, m.canary_image, m.nginx.image) == (
        "swiftdeploy-demo:1.0.0",
        "swiftdeploy-demo:2.0.0",
        "swiftdeploy-nginx:e2e",
    )
    assert (m.nginx.port, m.nginx.admin_port) == (s.public_port, s.admin_port)
    assert len({s.public_port, s.admin_port, s.opa_port}) == 3
    assert m.canary.weight == 50
    # Only the host thresholds are relaxed; the canary gate keeps the policy defaults.
    assert set(m.policy.thresholds.overrides()) == {"max_cpu_load", "min_disk_free_gb", "max_memory_used_percent"}


@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_story_stack_is_valid_compose_with_opa(story, tmp_path, compose_binary, mode):
    _, s = story
    if mode == "canary":
        s.manifest.write_text(edit_text(s.manifest.read_text(), {("services", "mode"): "canary"}))
    m = load_manifest(s.manifest)
    (tmp_path / "docker-compose.yml").write_text(render_compose(m))
    (tmp_path / "nginx.conf").write_text(render_nginx(m))
    done = subprocess.run(
        [str(compose_binary), "-f", str(tmp_path / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = {"app", "nginx", "opa"} | ({"app-canary"} if mode == "canary" else set())
    assert set(done.stdout.split()) == expected
