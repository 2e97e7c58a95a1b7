"""The starter manifest `swiftdeploy new` writes: commented, valid, and deployable as written.

On the local runtime it runs the demo API that ships with swiftdeploy (no `services.command`), so `swiftdeploy
deploy` works right after `swiftdeploy new` wherever nginx is installed; the comments say what to change for your
own service. The docker variant names the demo image and how to build it from the installed package.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidInput

RUNTIME_CHOICES = ("local", "docker", "swarm")

_HEAD = """\
# swiftdeploy manifest, written by `swiftdeploy new`. This is the only file you edit: `swiftdeploy init` generates
# docker-compose.yml, nginx.conf and policy-bundle/ from it, `swiftdeploy deploy` starts the stack.
# Every field and its default: docs/manifest.md (or `swiftdeploy schema`). What your own service must provide (a
# health path, two metrics, the environment it gets): docs/your-service.md.
#
#   swiftdeploy validate          # pre-flight checks (ports, nginx -t, {checks})
#   swiftdeploy deploy            # policy gate, then stable + nginx; public http://127.0.0.1:8080
#   swiftdeploy promote canary    # the canary below beside stable, canary.weight % of the traffic
#   swiftdeploy promote stable    # the canary policy judges it over a window (send traffic meanwhile)

services:
  # The stable track; the canary track is `<name>-canary`.
  name: app
{image}
  # The version stable runs (the app gets it as APP_VERSION). To ship a new one, put it under canary: and promote
  # it; changing it here and running `deploy` is refused by the policy (`deploy --direct` overrides that).
  version: 1.0.0
{port}
  # The path the app answers 200 on when it is healthy: deploy waits for it, status polls it.
  health_path: /healthz
{command}
canary:
  # The candidate `promote canary` starts beside stable (unset fields: the stable track's).
  version: 1.1.0
{canary_command}  # Percent of public requests the canary gets while it runs.
  weight: 10

nginx:
  port: 8080        # public listener
{admin}

policy:
  # auto: the OPA server when one answers, else the embedded Rego engine (same policies).
  engine: auto
  # How long `promote stable` watches the canary before the policy decides.
  window_seconds: 30s
  # The policy's defaults, shown for reference; uncomment one to change it.
  # thresholds:
  #   max_cpu_load_per_core: 2.0     # deploy gate: 1-minute load average per CPU
  #   min_disk_free_gb: 10
  #   max_memory_used_percent: 90
  #   max_error_rate_percent: 1      # promote gate: canary 5xx share over the window
  #   max_p99_latency_ms: 500
  #   min_requests: 20               # fewer canary requests in the window: inconclusive (blocks)

{runtime}
"""

_VARIANTS = {
    "local": {
        "checks": "the app command",
        "admin": "  admin_port: 8081  # /stable|canary/{metrics,healthz,chaos}, 127.0.0.1 only",
        "image": """\
  # The local runtime does not run images: this is only passed to the app as APP_IMAGE. The docker runtime runs it.
  image: swift-deploy-1-node:latest""",
        "port": """\
  # The stable app listens on 127.0.0.1:3000 (3002 after a blue/green restart), the canary on 3001 (or 3003).
  port: 3000""",
        "command": """\
  # Your app's command line (run in this folder; it gets MODE, APP_VERSION, APP_IMAGE, APP_PORT, APP_HOST).
  # Unset: the demo API that ships with swiftdeploy, so this file deploys as written.
  # command: [node, server.js]
""",
        "canary_command": """\
  # The canary's own command (unset: services.command); `promote stable` makes it services.command.
  # command: [node, server-next.js]
""",
        "runtime": """\
# local: the apps and nginx run as processes on 127.0.0.1 (needs nginx: `sudo apt-get install -y nginx-light`).
# docker: a compose stack (needs a Docker engine).
runtime: local""",
    },
    "docker": {
        "checks": "the images",
        "admin": "  admin_port: 8081  # /stable|canary/{metrics,healthz,chaos}, 127.0.0.1 only",
        "image": """\
  # The image of the stable track. The demo API's image, built from the installed package:
  #   docker build -t swift-deploy-1-node:latest \\
  #     "$(python3 -c 'import demo_api, os; print(os.path.dirname(demo_api.__file__))')"
  image: swift-deploy-1-node:latest""",
        "port": """\
  # The port the app listens on inside its container (it gets it as APP_PORT); never published directly.
  port: 3000""",
        "command": "",
        "canary_command": """\
  # The canary's image (unset: services.image); `promote stable` makes it services.image.
  # image: swift-deploy-1-node:next
""",
        "runtime": """\
# docker: a compose stack (needs a Docker engine with Compose v2). local: the same topology as processes.
runtime: docker""",
    },
    "swarm": {
        "checks": "the manager, its nodes, the images and the stack file",
        "admin": "  # The admin listener (/stable|canary/..., /task/<address>/...) is a unix socket on this manager:\n"
        "  # .swiftdeploy/admin/admin.sock. No admin port is published on any node.",
        "image": """\
  # The image of the stable track. No registry is asked: every node of the cluster must hold it
  # (`docker save IMAGE | docker -H <node> load`, or your own registry).
  image: swift-deploy-1-node:latest
  # How many tasks of the stable track run, spread over the nodes (the canary's: canary.replicas).
  replicas: 3""",
        "port": """\
  # The port the app listens on inside its tasks (it gets it as APP_PORT); never published.
  port: 3000""",
        "command": "",
        "canary_command": """\
  # The canary's image (unset: services.image) and its number of tasks.
  # image: swift-deploy-1-node:next
  replicas: 2
""",
        "runtime": """\
# swarm: a stack on the Docker Swarm cluster this manager runs (docs/swarm.md); swiftdeploy runs on the manager.
runtime: swarm
# swarm:
#   docker_host: unix:///var/run/docker.sock   # the manager's engine (default: DOCKER_HOST, else this socket)
#   nginx_constraints: ["node.role == manager"]  # nginx runs here: it mounts nginx.conf and the admin socket""",
    },
}


def starter_manifest(runtime: str = "local") -> str:
    """The text `swiftdeploy new --runtime RUNTIME` writes."""
    if runtime not in _VARIANTS:
        raise InvalidInput(f"unknown runtime {runtime!r}", hint=f"use one of: {', '.join(RUNTIME_CHOICES)}")
    return _HEAD.format(**_VARIANTS[runtime])


def write_starter(path: Path, runtime: str = "local", *, force: bool = False) -> Path:
    """Write the starter manifest to `path` (atomically; its folder is created). Refuses to replace an existing
    file unless `force`."""
    from .fsutil import atomic_write

    path = Path(path)
    text = starter_manifest(runtime)
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder", hint="pass the manifest's file path, e.g. -m deploy/manifest.yaml")
    if path.exists() and not force:
        raise InvalidInput(
            f"{path} already exists; nothing was written",
            hint="edit it, pass another path with -m PATH, or replace it with `swiftdeploy new --force`",
        )
    atomic_write(path, text)
    return path
