"""manifest -> docker-stack.yml, the swarm runtime's stack file (docs/swarm.md). Pure: YAML by hand, every scalar
quoted, like render/compose.py (whose app and hardening blocks it shares).

`docker stack deploy -c docker-stack.yml <project>` runs it on the manager. Services: the stable app
(`services.replicas` tasks), `<name>-canary` only in canary mode (`canary.replicas`), nginx. What a cluster without
IPVS needs, and what keeps the decider and the admin listener private:

- apps: `endpoint_mode: dnsrr` (no virtual IP: the kernel may have no IPVS, and nginx must see every task's own
  address to follow them), never published; update/rollback settings from `swarm.update` (start-first by default, so
  a restarted track never shrinks).
- nginx: one task, placed by `swarm.nginx_constraints` on the manager (it bind-mounts nginx.conf and the admin
  socket's folder from there), publishing nginx.port in `mode: host` (no routing mesh). Its admin listener is a unix
  socket in that folder: no admin port exists on any interface of any node.
- OPA is not in the stack: it runs on the manager as a supervised process on 127.0.0.1 (runtime/opa_service.py),
  a namespace no task shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import header, nginx_duration, yaml_flow_list, yaml_quote
from .compose import APP_USER, NGINX_CONF_MOUNT, NGINX_LIVE_CONF, NGINX_SERVICE, app_service, log_volume

if TYPE_CHECKING:
    from ..manifest import Manifest

STACK_FILE = "docker-stack.yml"
ADMIN_DIR = "/run/swiftdeploy"  # inside the nginx task: the bind mount of runtime.admin_socket(m)'s folder
ADMIN_SOCKET = f"{ADMIN_DIR}/admin.sock"
# uid:gid nginx runs as when swiftdeploy runs as root (the official image's `nginx`); another user's nginx runs as
# that user, so the socket it creates is theirs to connect to (generate passes `nginx_user`).
NGINX_ROOT_USER = "101:101"
# A socket left by a killed task would make the next one fail to bind: remove it, copy the config, exec nginx.
NGINX_START = (
    f"rm -f {ADMIN_SOCKET} && mkdir -p /tmp/swiftdeploy && cp {NGINX_CONF_MOUNT} {NGINX_LIVE_CONF} "
    f"&& exec nginx -c {NGINX_LIVE_CONF} -g 'daemon off;'"
)
# services.restart_policy in Swarm's words (a service's tasks are always restarted unless it says "no").
RESTART_CONDITION = {"no": "none", "on-failure": "on-failure", "always": "any", "unless-stopped": "any"}
STACK_LABEL = "com.docker.stack.namespace"  # what `docker stack deploy` labels every service and network with


def nginx_user() -> str:
    """The uid:gid the nginx task runs as: NGINX_ROOT_USER for root, else the user running swiftdeploy (so the admin
    socket nginx creates in the bind-mounted folder is that user's to connect to). The one impure input of the
    stack file, passed in by generate."""
    import os

    return NGINX_ROOT_USER if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"


def render_stack(m: Manifest, *, nginx_user: str = NGINX_ROOT_USER, only: str | None = None) -> str:
    """The complete docker-stack.yml text for `m`. Deterministic for a given manifest location and nginx_user.

    only: the stack with that one service (and the network and volume it needs): what the swarm runtime deploys to
    change one track, so that `docker stack deploy` (which converges every service its file names) leaves the
    others exactly as they run - as `docker compose up --no-deps SERVICE` does on docker."""
    blocks = [(m.services.name, lambda: _app(m, m.services.name, m.services.image, m.services.version, "stable",
                                             m.services.replicas))]  # fmt: skip
    if m.services.mode == "canary":
        blocks.append(
            (
                m.canary_name,
                lambda: _app(m, m.canary_name, m.canary_image, m.canary_version, "canary", m.canary.replicas),
            )  # fmt: skip
        )
    blocks.append((NGINX_SERVICE, lambda: _nginx(m, nginx_user)))
    chosen = [render for name, render in blocks if only is None or name == only]
    if not chosen:
        raise ValueError(f"the stack of this manifest has no service {only!r}")
    out = [
        header(m),
        "\n",
        # Swarm's loader (docker stack deploy) still wants a 3.x version; Compose v2 ignores it.
        f"version: {yaml_quote('3.8')}\n",
        "\n",
        "services:\n",
    ]
    for index, render in enumerate(chosen):
        out += (["\n"] if index else []) + render()
    out += [
        "\n",
        "networks:\n",
        f"  {yaml_quote(m.network.name)}:\n",
        f"    name: {yaml_quote(m.network.name)}\n",
        f"    driver: {yaml_quote('overlay')}\n",
        "\n",
        "volumes:\n",
        f"  {yaml_quote(log_volume(m))}: {{}}\n",
    ]
    return "".join(out)


def _hardening(m: Manifest, user: str) -> list[str]:
    return [
        f"    user: {yaml_quote(user)}\n",
        "    cap_drop:\n",
        f"      - {yaml_quote('ALL')}\n",
        "    networks:\n",
        f"      - {yaml_quote(m.network.name)}\n",
    ]


def _app(m: Manifest, name: str, image: str, version: str, mode: str, replicas: int) -> list[str]:
    u = m.swarm.update
    update = [
        f"        parallelism: {u.parallelism}\n",
        f"        delay: {yaml_quote(nginx_duration(u.delay))}\n",
        f"        order: {yaml_quote(u.order)}\n",
        f"        monitor: {yaml_quote(nginx_duration(u.monitor))}\n",
    ]
    return [
        *app_service(m, name, image, version, mode, expose=False),
        *_hardening(m, APP_USER),
        "    deploy:\n",
        f"      replicas: {replicas}\n",
        f"      endpoint_mode: {yaml_quote('dnsrr')}\n",
        "      restart_policy:\n",
        f"        condition: {yaml_quote(RESTART_CONDITION[m.services.restart_policy])}\n",
        f"        delay: {yaml_quote('1s')}\n",
        "      update_config:\n",
        *update,
        f"        failure_action: {yaml_quote(u.failure_action)}\n",
        "      rollback_config:\n",
        *update,
    ]


def _nginx(m: Manifest, user: str) -> list[str]:
    from ..runtime import admin_socket

    conf = m.out_dir / "nginx.conf"
    lines = [
        f"  {NGINX_SERVICE}:\n",
        f"    image: {yaml_quote(m.nginx.image)}\n",
        f"    entrypoint: {yaml_flow_list(['sh', '-c', NGINX_START])}\n",
        "    ports:\n",
        f"      - target: {m.nginx.port}\n",
        f"        published: {m.nginx.port}\n",
        f"        protocol: {yaml_quote('tcp')}\n",
        f"        mode: {yaml_quote('host')}\n",
        "    volumes:\n",
        f"      - type: {yaml_quote('bind')}\n",
        f"        source: {yaml_quote(str(conf))}\n",
        f"        target: {yaml_quote(NGINX_CONF_MOUNT)}\n",
        "        read_only: true\n",
        f"      - type: {yaml_quote('bind')}\n",
        f"        source: {yaml_quote(str(admin_socket(m).parent))}\n",
        f"        target: {yaml_quote(ADMIN_DIR)}\n",
        f"      - type: {yaml_quote('tmpfs')}\n",
        f"        target: {yaml_quote('/tmp')}\n",
        "    read_only: true\n",
        *_hardening(m, user),
        "    deploy:\n",
        "      replicas: 1\n",
        "      placement:\n",
        "        constraints:\n",
        *[f"          - {yaml_quote(c)}\n" for c in m.swarm.nginx_constraints],
        "      restart_policy:\n",
        f"        condition: {yaml_quote('any')}\n",
        f"        delay: {yaml_quote('1s')}\n",
        # A host-mode port is held by one task per node: the old nginx stops before its replacement starts.
        "      update_config:\n",
        f"        order: {yaml_quote('stop-first')}\n",
    ]
    return lines
