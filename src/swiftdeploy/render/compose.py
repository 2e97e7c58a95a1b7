"""manifest -> docker-compose.yml (docs/contracts.md#docker-composeyml). Pure: YAML by hand, every scalar quoted.

Services: the stable app, `<name>-canary` only in canary mode, nginx, and OPA when the policy engine may use a
server (engine `opa` or `auto`). Apps are never published (`expose` only); nginx publishes the public port and the
admin port on 127.0.0.1. OPA is on no compose network at all: it runs in the host's network namespace and listens
on the host's 127.0.0.1:<opa.port> only, so neither the app nor nginx (nor any container) can reach it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import header, yaml_flow_list, yaml_quote

if TYPE_CHECKING:
    from ..manifest import Manifest

# Non-root users. The app's uid must own LOG_DIR in the image so a fresh named volume inherits that ownership.
APP_USER = "10001:10001"
# 101 is `nginx` in the official image; nginx.conf keeps pid/temp files in /tmp so any uid works.
NGINX_USER = "101:101"
OPA_USER = "1000:1000"
LOG_DIR = "/var/log/app"
OPA_BUNDLE_MOUNT = "/policy-bundle"
NGINX_SERVICE = "nginx"
OPA_SERVICE = "opa"
# nginx.conf is bind-mounted read-only at NGINX_CONF_MOUNT, and nginx runs a copy at NGINX_LIVE_CONF on the tmpfs.
# Why: generate replaces nginx.conf by rename, and a running container's single-file bind mount keeps the OLD inode,
# so a reload could never see the new file there. A (re)started container re-resolves the mount from the path and
# copies the current file; a running one gets the new text piped into NGINX_LIVE_CONF by the docker runtime, which
# then reloads nginx gracefully (runtime/docker.py).
NGINX_CONF_MOUNT = "/etc/swiftdeploy/nginx.conf"
NGINX_LIVE_CONF = "/tmp/swiftdeploy/nginx.conf"
NGINX_START = (
    f"mkdir -p /tmp/swiftdeploy && cp {NGINX_CONF_MOUNT} {NGINX_LIVE_CONF} "
    f"&& exec nginx -c {NGINX_LIVE_CONF} -g 'daemon off;'"
)


def includes_opa(m: Manifest) -> bool:
    """`auto` tries the OPA server first, so the compose stack deploys one; `embedded` never needs it."""
    return m.policy.engine in ("opa", "auto")


def log_volume(m: Manifest) -> str:
    return f"{m.services.name}-logs"


def render_compose(m: Manifest) -> str:
    """The complete docker-compose.yml text for `m`. Deterministic."""
    out = [header(m), "\n", f"name: {yaml_quote(m.project_name)}\n", "\n", "services:\n"]
    out += _app(m, m.services.name, m.services.image, m.services.version, "stable")
    if m.services.mode == "canary":
        out.append("\n")
        out += _app(m, m.canary_name, m.canary_image, m.canary_version, "canary")
    out.append("\n")
    out += _nginx(m)
    if includes_opa(m):
        out.append("\n")
        out += _opa(m)
    out += [
        "\n",
        "networks:\n",
        f"  {yaml_quote(m.network.name)}:\n",
        f"    name: {yaml_quote(m.network.name)}\n",
        f"    driver: {yaml_quote(m.network.driver_type)}\n",
        "\n",
        "volumes:\n",
        f"  {yaml_quote(log_volume(m))}: {{}}\n",
    ]
    return "".join(out)


def _hardening(m: Manifest, user: str, *, networks: bool = True) -> list[str]:
    lines = [
        f"    user: {yaml_quote(user)}\n",
        f"    restart: {yaml_quote(m.services.restart_policy)}\n",
        "    cap_drop:\n",
        f"      - {yaml_quote('ALL')}\n",
        "    security_opt:\n",
        f"      - {yaml_quote('no-new-privileges:true')}\n",
    ]
    if networks:
        lines += ["    networks:\n", f"      - {yaml_quote(m.network.name)}\n"]
    return lines


def _app(m: Manifest, name: str, image: str, version: str, mode: str) -> list[str]:
    return [*app_service(m, name, image, version, mode, expose=True), *_hardening(m, APP_USER)]


def app_service(m: Manifest, name: str, image: str, version: str, mode: str, *, expose: bool) -> list[str]:
    """An app service's image, environment, healthcheck and log volume (compose and the swarm stack file alike)."""
    port = m.services.port
    # CMD form + Python's urllib: slim images have no curl and no shell is needed. Non-2xx raises -> exit 1.
    health = m.services.health_path
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{health}', timeout=3)"
    return [
        f"  {yaml_quote(name)}:\n",
        f"    image: {yaml_quote(image)}\n",
        "    environment:\n",
        f"      MODE: {yaml_quote(mode)}\n",
        f"      APP_VERSION: {yaml_quote(version)}\n",
        f"      APP_IMAGE: {yaml_quote(image)}\n",
        f"      APP_PORT: {yaml_quote(port)}\n",
        f"      LOG_DIR: {yaml_quote(LOG_DIR)}\n",
        *(["    expose:\n", f"      - {yaml_quote(port)}\n"] if expose else []),
        "    healthcheck:\n",
        f"      test: {yaml_flow_list(['CMD', 'python3', '-c', probe])}\n",
        f"      interval: {yaml_quote('3s')}\n",
        f"      timeout: {yaml_quote('4s')}\n",
        "      retries: 10\n",
        f"      start_period: {yaml_quote('15s')}\n",
        "    volumes:\n",
        f"      - {yaml_quote(f'{log_volume(m)}:{LOG_DIR}')}\n",
    ]


def _nginx(m: Manifest) -> list[str]:
    deps = [m.services.name] + ([m.canary_name] if m.services.mode == "canary" else [])
    lines = [
        f"  {NGINX_SERVICE}:\n",
        f"    image: {yaml_quote(m.nginx.image)}\n",
        # Our own entrypoint (sh is in the official image and in Debian's): copy, then exec nginx as PID 1.
        f"    entrypoint: {yaml_flow_list(['sh', '-c', NGINX_START])}\n",
        "    ports:\n",
        f"      - {yaml_quote(f'{m.nginx.port}:{m.nginx.port}')}\n",
        f"      - {yaml_quote(f'127.0.0.1:{m.nginx.admin_port}:{m.nginx.admin_port}')}\n",
        "    volumes:\n",
        f"      - {yaml_quote(f'./nginx.conf:{NGINX_CONF_MOUNT}:ro')}\n",
        # Read-only root: nginx.conf keeps its pid and temp files in /tmp, which is a tmpfs (so is the live copy).
        "    read_only: true\n",
        "    tmpfs:\n",
        f"      - {yaml_quote('/tmp')}\n",
        "    depends_on:\n",
    ]
    for dep in deps:
        lines += [f"      {yaml_quote(dep)}:\n", f"        condition: {yaml_quote('service_healthy')}\n"]
    return lines + _hardening(m, NGINX_USER)


def _opa(m: Manifest) -> list[str]:
    """OPA shares no network with the app or nginx: it runs in the host's network namespace, listening on the
    host's 127.0.0.1 only (`--addr`), so no container can reach it and only the host's own processes can - and its
    authorization policy lets those only ask decisions (policy/server.py, policy/bundle.py)."""
    from ..policy.server import server_args

    # --watch: `swiftdeploy init` rewrites policy-bundle/ (e.g. a threshold override); OPA reloads it by itself.
    command = server_args(f"127.0.0.1:{m.opa.port}", OPA_BUNDLE_MOUNT, watch=True)
    return [
        f"  {OPA_SERVICE}:\n",
        f"    image: {yaml_quote(m.opa.image)}\n",
        f"    command: {yaml_flow_list(command)}\n",
        f"    network_mode: {yaml_quote('host')}\n",
        "    volumes:\n",
        f"      - {yaml_quote(f'./policy-bundle:{OPA_BUNDLE_MOUNT}:ro')}\n",
        "    read_only: true\n",
        *_hardening(m, OPA_USER, networks=False),
    ]
