"""The pure builders: golden files of the example manifest, determinism, and the structure of nginx.conf and
docker-compose.yml (docs/contracts.md#generated-files).

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/foundation`.
The header's sha256 (of the manifest's settings) is stored as a placeholder: a new default value changes no golden
file either (test_header_names_manifest_file_and_settings_sha256 checks the real digest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swiftdeploy.errors import ManifestError
from swiftdeploy.manifest import load_manifest, parse_manifest
from swiftdeploy.policy.bundle import load_policy_set
from swiftdeploy.policy.opa_version import OPA_VERSION
from swiftdeploy.render import NginxTarget, header_text, render_all, render_compose, render_nginx

GOLDEN = Path(__file__).parent / "golden"
STATE = Path("/srv/app/.swiftdeploy")
HEADER_SHA256 = re.compile(r"\(sha256 [0-9a-f]{64}\)")


def _golden(name: str, text: str) -> None:
    header, _, rest = text.partition("\n")
    header, found = HEADER_SHA256.subn("(sha256 <manifest sha256>)", header)
    assert found == 1, f"{name}: no manifest sha256 in the header line {header!r}"
    text = f"{header}\n{rest}"
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path}; create it with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; if intended, regenerate with UPDATE_GOLDEN=1"


def _directives(text: str) -> str:
    """nginx.conf without its comment lines."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@pytest.fixture
def canary(manifests):
    return manifests.load(manifests.example_text(("  mode: stable", "  mode: canary")))


def test_golden_stable(example_path):
    m = load_manifest(example_path)
    _golden("stable.docker-compose.yml", render_compose(m))
    _golden("stable.nginx.conf", render_nginx(m))


def test_golden_canary(canary):
    _golden("canary.docker-compose.yml", render_compose(canary))
    _golden("canary.nginx.conf", render_nginx(canary))
    _golden("canary.local.nginx.conf", render_nginx(canary, NginxTarget.local(canary, STATE, 3000, 3001)))


# The example manifest on the swarm runtime, 3 stable and 2 canary replicas.
SWARM = [
    ("runtime: docker", "runtime: swarm"),
    ("driver_type: bridge", "driver_type: overlay"),
    ("  replicas: 1\n\ncanary:", "  replicas: 3\n\ncanary:"),
    ("  replicas: 1\n\nnginx:", "  replicas: 2\n\nnginx:"),
]


@pytest.mark.parametrize("mode", ["stable", "canary"])
def test_golden_swarm(manifests, mode):
    """docker-stack.yml and the swarm nginx.conf. The stack file names the manifest's folder (the bind mounts of
    nginx.conf and the admin socket's folder): it is stored as /srv/app."""
    m = manifests.load(manifests.example_text(*SWARM, ("  mode: stable", f"  mode: {mode}")))
    files = render_all(m, load_policy_set(m))
    assert "docker-compose.yml" not in files  # the swarm runtime's stack file replaces it
    for name in ("docker-stack.yml", "nginx.conf"):
        _golden(f"swarm.{mode}.{name}", files[name].replace(str(m.base_dir), "/srv/app"))


def test_render_is_deterministic_across_loads(example_path, canary):
    first = render_all(load_manifest(example_path), load_policy_set(load_manifest(example_path)))
    second = render_all(load_manifest(example_path), load_policy_set(load_manifest(example_path)))
    assert first == second
    assert list(first) == list(second)  # same order too
    assert {"docker-compose.yml", "nginx.conf", "policy-bundle/data.json"} <= set(first)


@pytest.mark.parametrize("seed", ["1", "2"])
def test_render_is_the_same_in_another_interpreter(canary, seed):
    """`swiftdeploy init` in a fresh interpreter with another hash seed (which reorders every set of strings)
    writes the bytes this process renders: nothing depends on set order, ids or the clock."""
    m = canary
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-m", "swiftdeploy", "-m", str(m.base_dir / "manifest.yaml"), "init"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (m.out_dir / "nginx.conf").read_text(encoding="utf-8") == render_nginx(m)
    assert (m.out_dir / "docker-compose.yml").read_text(encoding="utf-8") == render_compose(m)


def test_header_names_manifest_file_and_settings_sha256(example_path):
    import hashlib

    m = load_manifest(example_path)
    settings = json.dumps(m.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(settings.encode()).hexdigest()
    for text in (render_compose(m), render_nginx(m)):
        first = text.splitlines()[0]
        assert first == f"# {header_text(m)}"
        assert f"from manifest.yaml (sha256 {digest}), a hash of the settings" in first
        assert "comments and layout do not count" in first  # the header says what it hashes
        assert str(example_path.parent) not in first  # the file name, not its absolute path
        assert "swiftdeploy init" in first


def test_header_ignores_comments_and_layout_but_not_values(manifests, minimal_text):
    a = manifests.load(minimal_text)
    b = manifests.load("# a comment\n" + minimal_text.replace("{image:", "{ image:") + "# another\n")
    c = manifests.load(minimal_text.replace("port: 8080", "port: 8088"))
    assert a.sha256 != b.sha256  # the bytes differ ...
    assert render_nginx(a) == render_nginx(b)  # ... the settings do not
    assert render_nginx(a).splitlines()[0] != render_nginx(c).splitlines()[0]


# --- nginx.conf structure ---------------------------------------------------------------------------------------


def test_nginx_stable_mode_never_references_canary_upstream(example_path):
    text = render_nginx(load_manifest(example_path))
    assert "app-canary" not in text.replace('"service":"app-canary"', "")
    assert "upstream canary" not in text
    assert "split_clients" not in text
    assert "proxy_pass http://stable;" in text
    assert re.search(r"location \^~ /canary/ \{\s+return 503 '\{\"error\":\"no canary track running\"", text)


def test_nginx_canary_split_and_override(canary):
    text = render_nginx(canary)
    assert "upstream canary {\n        server app-canary:3000 max_fails=0;" in text
    assert 'split_clients "${request_id}" $swiftdeploy_split {\n        10% canary;\n        * stable;\n    }' in text
    assert '"~*^always$" canary;' in text and '"~*^never$" stable;' in text
    assert "proxy_pass http://$swiftdeploy_track;" in text
    for path in ("metrics", "healthz", "chaos"):
        assert f"location = /canary/{path} {{\n            proxy_pass http://canary/{path};" in text
        assert f"location = /stable/{path} {{\n            proxy_pass http://stable/{path};" in text


@pytest.mark.parametrize(
    ("weight", "lines"), [(0, ["* stable;"]), (100, ["* canary;"]), (37, ["37% canary;", "* stable;"])]
)
def test_nginx_split_weights(manifests, weight, lines):
    m = manifests.load(
        manifests.example_text(("  mode: stable", "  mode: canary"), ("  weight: 10", f"  weight: {weight}"))
    )
    block = re.search(r"split_clients \S+ \$swiftdeploy_split \{\n(.*?)\n    \}", render_nginx(m), re.S)
    assert block is not None
    assert [line.strip() for line in block.group(1).splitlines()] == lines


def test_nginx_public_listener_contract(example_path):
    m = load_manifest(example_path)
    text = render_nginx(m)
    assert "log_format swiftdeploy '$time_iso8601 | $status | ${request_time}s | $upstream_addr | $request';" in text
    assert text.count("add_header X-Deployed-By swiftdeploy always;") == 2  # both servers, inherited by locations
    assert len(re.findall(r"^\s+add_header", text, re.M)) == 2  # a location-level add_header would drop it
    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert f"{directive} 30s;" in text
    assert "proxy_hide_header" not in text  # the upstream's X-Mode passes through
    assert 'location ~ "^/(metrics|chaos|stable|canary)(/|$)"' in text
    assert "8181" not in _directives(text) and "opa" not in _directives(text).lower()  # nothing routes to OPA
    bodies = re.findall(r"return (\d{3}) '(\{.*?\})';", text)
    codes = {int(code) for code, _ in bodies}
    assert {404, 502, 503, 504} <= codes
    for code, body in bodies:
        data = json.loads(body)
        assert set(data) == {"error", "code", "service", "contact"}
        assert data["code"] == int(code) and data["contact"] == "ops@example.com"


def test_nginx_runs_on_any_image_and_user(example_path):
    text = render_nginx(load_manifest(example_path))
    assert re.search(r"^\s*user\s", text, re.M) is None
    assert "include" not in _directives(text)  # no mime.types or conf.d: their paths differ between images
    assert "daemon" not in _directives(text)  # the official image passes `daemon off;` itself
    assert 'pid "/tmp/nginx.pid";' in text and "error_log stderr warn;" in text
    assert 'access_log "/dev/stdout" swiftdeploy;' in text
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f'{kind}_temp_path "/tmp/nginx-{kind.replace("_", "-")}";' in text


def test_nginx_timeouts_in_milliseconds(manifests):
    m = manifests.load(manifests.example_text(("proxy_timeout: 30s", "proxy_timeout: 1.5s")))
    assert "proxy_read_timeout 1500ms;" in render_nginx(m)


def test_nginx_local_target(canary):
    target = NginxTarget.local(canary, STATE, 4100, 4101)
    text = render_nginx(canary, target)
    assert "server 127.0.0.1:4100 max_fails=0;" in text and "server 127.0.0.1:4101 max_fails=0;" in text
    assert "listen 127.0.0.1:8080;" in text and "listen 127.0.0.1:8081;" in text
    assert f'pid "{STATE}/nginx/nginx.pid";' in text
    assert f'error_log "{STATE}/logs/nginx-error.log" warn;' in text
    assert f'proxy_temp_path "{STATE}/nginx/tmp/nginx-proxy";' in text
    assert target.required_dirs() == [STATE / "logs", STATE / "nginx", STATE / "nginx" / "tmp"]
    assert NginxTarget.docker(canary).required_dirs() == []


def test_nginx_target_must_match_mode(example_path, canary):
    stable = load_manifest(example_path)
    with pytest.raises(ValueError, match="canary_port"):
        NginxTarget.local(canary, STATE, 4100)
    with pytest.raises(ValueError, match="has a canary upstream"):
        render_nginx(stable, NginxTarget.docker(canary))


def test_nginx_local_target_refuses_unsafe_state_path(canary):
    target = NginxTarget.local(canary, Path('/srv/a";evil/.swiftdeploy'), 4100, 4101)
    with pytest.raises(ValueError, match="cannot be written into nginx.conf"):
        render_nginx(canary, target)


# --- docker-compose.yml structure -------------------------------------------------------------------------------


def test_compose_services_by_mode_and_engine(manifests, minimal_text):
    def services(text: str) -> list[str]:
        block = render_compose(manifests.load(text)).split("\nservices:\n", 1)[1].split("\nnetworks:\n", 1)[0]
        return re.findall(r'^  "?([a-z0-9_-]+)"?:$', block, re.M)

    assert services(minimal_text) == ["app", "nginx", "opa"]  # engine auto: the stack deploys OPA
    assert services(minimal_text + "policy: {engine: embedded}\n") == ["app", "nginx"]
    assert services(minimal_text + "policy: {engine: opa}\n") == ["app", "nginx", "opa"]
    canary = minimal_text.replace("port: 3000}", "port: 3000, mode: canary}")
    assert services(canary) == ["app", "app-canary", "nginx", "opa"]


def test_compose_contract(canary):
    text = render_compose(canary)
    app = text.split('  "app":\n', 1)[1].split("\n\n", 1)[0]
    assert "ports:" not in app and 'expose:\n      - "3000"' in app
    assert 'test: ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen(' in app
    assert "http://127.0.0.1:3000/healthz" in app and "curl" not in text
    assert 'user: "10001:10001"' in app
    assert 'cap_drop:\n      - "ALL"' in app and 'security_opt:\n      - "no-new-privileges:true"' in app
    assert 'restart: "unless-stopped"' in app
    assert 'MODE: "stable"' in app and 'APP_VERSION: "1.0.0"' in app and 'APP_PORT: "3000"' in app
    assert '- "app-logs:/var/log/app"' in app
    canary_block = text.split('  "app-canary":\n', 1)[1].split("\n\n", 1)[0]
    assert 'MODE: "canary"' in canary_block and 'APP_VERSION: "1.1.0"' in canary_block
    nginx = text.split("  nginx:\n", 1)[1].split("\n\n", 1)[0]
    assert '- "8080:8080"' in nginx and '- "127.0.0.1:8081:8081"' in nginx
    assert '- "./nginx.conf:/etc/swiftdeploy/nginx.conf:ro"' in nginx
    assert 'entrypoint: ["sh", "-c", "mkdir -p /tmp/swiftdeploy && cp /etc/swiftdeploy/nginx.conf ' in nginx
    assert "exec nginx -c /tmp/swiftdeploy/nginx.conf -g 'daemon off;'\"]" in nginx
    assert '"app":\n        condition: "service_healthy"' in nginx
    assert '"app-canary":\n        condition: "service_healthy"' in nginx
    opa = text.split("  opa:\n", 1)[1].split("\n\n", 1)[0]
    assert f'image: "openpolicyagent/opa:{OPA_VERSION}"' in opa
    assert (
        'command: ["run", "--server", "--addr=127.0.0.1:8181", "--authorization=basic", "--skip-version-check", '
        '"--watch", "--bundle", "/policy-bundle"]'
    ) in opa
    assert 'network_mode: "host"' in opa and "ports:" not in opa and "networks:" not in opa
    assert '- "./policy-bundle:/policy-bundle:ro"' in opa
    assert 'networks:\n  "swiftdeploy-net":\n    name: "swiftdeploy-net"\n    driver: "bridge"' in text
    assert 'volumes:\n  "app-logs": {}' in text


def test_compose_every_value_is_quoted(canary):
    unquoted = []
    for line in render_compose(canary).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.strip().removeprefix("- ").partition(": ")
        scalar = value if sep else (line.strip().removeprefix("- ") if line.strip().startswith("- ") else "")
        if scalar and not scalar.startswith(('"', "[", "{}")) and not re.fullmatch(r"\d+|true", scalar):
            unquoted.append(line)
    assert unquoted == []


def test_restart_no_stays_a_string(manifests, minimal_text):
    text = render_compose(manifests.load(minimal_text.replace("port: 3000}", 'port: 3000, restart_policy: "no"}')))
    assert 'restart: "no"' in text


def test_built_in_code_manifest_renders(minimal_text):
    m = parse_manifest(minimal_text)  # no file: the header still names its settings
    assert f"(sha256 {m.settings_sha256})" in render_compose(m).splitlines()[0]


def test_the_health_path_reaches_every_generated_probe(manifests, minimal_text):
    m = manifests.load(minimal_text.replace("port: 3000}", "port: 3000, health_path: /health/ready}"))
    compose = render_compose(m)
    assert "urlopen('http://127.0.0.1:3000/health/ready', timeout=3)" in compose  # the docker healthcheck
    assert "/healthz" not in compose
    nginx = render_nginx(m)
    assert "location = /stable/healthz {\n            proxy_pass http://stable/health/ready;" in nginx  # admin path
    assert "proxy_pass http://stable/metrics;" in nginx and "proxy_pass http://stable/chaos;" in nginx
    with pytest.raises(ManifestError, match=r"services.health_path: 'health\?x=1' is not a valid URL path"):
        manifests.load(minimal_text.replace("port: 3000}", "port: 3000, health_path: 'health?x=1'}"))


def test_each_track_gets_its_image_as_app_image(canary):
    compose = render_compose(canary)
    assert compose.count('APP_IMAGE: "swift-deploy-1-node:latest"') == 2  # stable and canary (same image here)
