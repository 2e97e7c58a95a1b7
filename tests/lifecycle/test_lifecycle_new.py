"""`swiftdeploy new`: a commented starter manifest that validates and deploys as written, never over an existing
one, and the hints that point at it."""

from __future__ import annotations

import os
import subprocess

from support import RELAXED_HOST, SWIFTDEPLOY, cli, leftovers

from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import edit_text
from swiftdeploy.runtime.procs import free_port_block, port_free


def new(folder, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SWIFTDEPLOY_MANIFEST", None)
    return subprocess.run([SWIFTDEPLOY, "new", *args], cwd=folder, capture_output=True, text=True, timeout=60, env=env)


def test_new_writes_a_commented_manifest_and_refuses_to_overwrite_it(tmp_path):
    r = new(tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "manifest.yaml"
    assert "wrote manifest.yaml (local runtime)" in r.stdout and "swiftdeploy deploy" in r.stdout
    text = manifest.read_text()
    assert text.startswith("# swiftdeploy manifest, written by `swiftdeploy new`")
    assert "docs/your-service.md" in text and "# command: [node, server.js]" in text
    m = load_manifest(manifest)
    assert (m.runtime, m.services.health_path, m.services.command) == ("local", "/healthz", None)

    manifest.write_text(text + "# my edit\n")
    r = new(tmp_path, "--runtime", "docker")
    assert r.returncode == 2 and "manifest.yaml already exists; nothing was written" in r.stderr
    assert "--force" in r.stderr and manifest.read_text().endswith("# my edit\n")

    r = new(tmp_path, "--runtime", "docker", "--force")
    assert r.returncode == 0, r.stderr
    docker = load_manifest(manifest)
    assert docker.runtime == "docker" and "docker build -t swift-deploy-1-node:latest" in manifest.read_text()

    env = {**os.environ, "NO_COLOR": "1"}
    r = subprocess.run(
        [SWIFTDEPLOY, "-m", "deploy/prod.yaml", "new"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    assert load_manifest(tmp_path / "deploy" / "prod.yaml").runtime == "local"
    assert "swiftdeploy -m deploy/prod.yaml validate" in r.stdout

    # the docker variant renders and passes `init` too
    assert cli(manifest, "init").returncode == 0

    # the swarm variant: replicas on both tracks, no admin port, docker-stack.yml instead of docker-compose.yml
    assert new(tmp_path, "--runtime", "swarm", "--force").returncode == 0
    swarm = load_manifest(manifest)
    assert (swarm.runtime, swarm.services.replicas, swarm.canary.replicas) == ("swarm", 3, 2)
    assert "admin_port" not in manifest.read_text()
    assert cli(manifest, "init").returncode == 0 and (tmp_path / "docker-stack.yml").is_file()


def test_the_starter_deploys_as_written(stack_dir):
    """`new`, `validate`, `deploy`, `promote canary` with the file as written. Two things are not the file's to
    promise on a shared test machine: its fixed ports are moved when one is taken, and the host thresholds are
    relaxed (the machine's own load must not decide the test)."""
    r = new(stack_dir)
    assert r.returncode == 0, r.stderr
    manifest = stack_dir / "manifest.yaml"
    m = load_manifest(manifest)
    ports = [m.nginx.port, m.nginx.admin_port, *range(m.services.port, m.services.port + 4)]
    values: dict = {("policy", "thresholds"): dict(RELAXED_HOST)}
    if not all(port_free(p) for p in ports):
        base = free_port_block(6)
        values |= {("nginx", "port"): base, ("nginx", "admin_port"): base + 1, ("services", "port"): base + 2}
    manifest.write_text(edit_text(manifest.read_text(), values))

    r = cli(manifest, "validate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not generated yet" in r.stdout  # a new manifest has nothing to drift from
    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "app-canary (swift-deploy-1-node:latest, 1.1.0) takes 10% of public traffic" in r.stdout
    assert cli(manifest, "teardown").returncode == 0
    assert leftovers(stack_dir) == []
