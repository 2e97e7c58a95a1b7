"""Runtimes: where the stack runs. `RUNTIMES` below is the one place that knows which runtimes exist and what
each needs; the manifest model, `validate` (checks.py), the policy engine choice and the operations ask it
instead of testing a runtime's name.

Adding a runtime is one module with a class implementing `base.Runtime` (e.g. `runtime/swarm.py`) plus one
`RuntimeSpec` line in RUNTIMES: the manifest accepts its name, `validate` runs the checks its spec asks for, and
`get_runtime` builds it. Light on import: this module and `base` import nothing heavy; a runtime's own module
(docker SDK, psutil) loads only when `get_runtime` builds it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .base import Runtime, ServiceHealth, Track, service_of, wait_until_healthy

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = [
    "RUNTIMES",
    "PortClaim",
    "Runtime",
    "RuntimeSpec",
    "ServiceHealth",
    "admin_address",
    "admin_socket",
    "Track",
    "LOCAL_APP_PORTS",
    "get_runtime",
    "local_app_ports",
    "port_claims",
    "runtime_spec",
    "service_of",
    "stack_runs_opa",
    "wait_until_healthy",
]


@dataclass(frozen=True)
class RuntimeSpec:
    """What a runtime is and needs, as data the rest of swiftdeploy reads."""

    name: str  # the manifest's `runtime:` value
    summary: str  # a few words for the manifest reference: "docker (compose)"
    impl: str  # "module:Class" implementing base.Runtime (a module relative to this package), for get_runtime
    # images: the apps run from container images (validate checks each image is in the local engine);
    # command: the app is `services.command` run on this host (validate checks it; services.port is a host port).
    apps: Literal["images", "command"]
    # container: nginx runs in the stack from the generated nginx.conf (NginxTarget.docker: service-name upstreams);
    # host: nginx runs on this host from its own variant in the state folder (NginxTarget.local: 127.0.0.1 ports),
    # which validate `nginx -t`s as well.
    nginx: Literal["container", "host"]
    # Whether the stack runs an OPA server at 127.0.0.1:<opa.port> (policy.engine `auto` asks it first, deploy
    # starts it before the first gate, validate checks its port is free): "always" (an OPA service of the stack) or
    # "with-binary" (a supervised process, when an OPA binary is found: policy/server.py's find_binary).
    opa_service: Literal["always", "with-binary"]
    public_host: str  # the host address nginx's public port is bound on (compose publishes on every interface)
    # tcp: nginx's admin listener is 127.0.0.1:<nginx.admin_port>; unix: a unix socket in the state folder
    # (`admin_socket(m)`): swarm publishes ports on every interface of a node, so no TCP port could stay private.
    admin: Literal["tcp", "unix"] = "tcp"
    # replicas: a track runs several replicas, each scraped on its own and summed: the runtime provides
    # `task_urls(m, track, what) -> {task id: URL}`, metrics.track_urls asks it
    # (docs/swarm.md#how-metrics-are-gathered).
    replicas: bool = False


# One line per runtime: name, summary, implementation, apps, nginx, opa_service, public_host (see RuntimeSpec).
RUNTIMES: dict[str, RuntimeSpec] = {
    spec.name: spec
    for spec in (
        RuntimeSpec("docker", "compose", ".docker:DockerRuntime", "images", "container", "always", "0.0.0.0"),
        RuntimeSpec("local", "processes", ".local:LocalRuntime", "command", "host", "with-binary", "127.0.0.1"),
        RuntimeSpec(
            "swarm",
            "docker swarm stack",
            ".swarm:SwarmRuntime",
            "images",
            "container",
            "with-binary",
            "0.0.0.0",
            admin="unix",
            replicas=True,
        ),
    )
}


def admin_socket(m: Manifest) -> Path:
    """The admin listener's unix socket on a runtime whose spec says `admin="unix"` (nginx listens on it inside its
    container, from a bind mount of this folder)."""
    return m.state_dir / "admin" / "admin.sock"


def admin_address(m: Manifest) -> str:
    """The admin listener for people: `http://127.0.0.1:8081`, or `unix:<socket>` (RuntimeSpec.admin)."""
    if runtime_spec(m).admin == "unix":
        return f"unix:{admin_socket(m)}"
    return f"http://127.0.0.1:{m.nginx.admin_port}"


def runtime_spec(m: Manifest) -> RuntimeSpec:
    """The spec of the runtime the manifest names (the model accepts only names in RUNTIMES)."""
    return RUNTIMES[m.runtime]


def stack_runs_opa(m: Manifest) -> bool:
    """Whether a deploy of `m` runs an OPA server (RuntimeSpec.opa_service), whatever policy.engine says."""
    if runtime_spec(m).opa_service == "always":
        return True
    from ..policy.server import find_binary

    return find_binary(m) is not None


def get_runtime(m: Manifest) -> Runtime:
    """A fresh instance of the manifest's runtime; its module is imported here, on first use."""
    module, _, cls = runtime_spec(m).impl.partition(":")
    runtime: Runtime = getattr(importlib.import_module(module, __name__), cls)()
    return runtime


@dataclass(frozen=True)
class PortClaim:
    """One port a deploy of the manifest uses on this host."""

    field: str  # the manifest field that sets it: "nginx.port"
    what: str  # a short name for messages: "public"
    host: str  # the address it is bound on
    port: int
    # validate checks it can be bound now (or is held by this deployment). False: it is a server the person runs
    # (OPA when the runtime runs no OPA service).
    must_be_free: bool = True


def port_claims(m: Manifest, *, probe: bool = True) -> list[PortClaim]:
    """The port rules: every host port a deploy of `m` listens on or talks to. The manifest model keeps their
    numbers distinct (with probe=False: it looks for no OPA binary, so `must_be_free` of a "with-binary" OPA
    port is False there); validate binds the `must_be_free` ones."""
    spec = runtime_spec(m)
    claims = [PortClaim("nginx.port", "public", spec.public_host, m.nginx.port)]
    if spec.admin == "tcp":
        claims.append(PortClaim("nginx.admin_port", "admin", "127.0.0.1", m.nginx.admin_port))
    if m.policy.engine != "embedded":
        claims.append(PortClaim("opa.port", "opa", "127.0.0.1", m.opa.port, must_be_free=probe and stack_runs_opa(m)))
    if spec.apps == "command":
        # The apps run on this host, each on a fixed port derived from services.port (local_app_ports).
        for offset, what in LOCAL_APP_PORTS.items():
            field = "services.port" + (f" + {offset}" if offset else "")
            claims.append(PortClaim(field, what, "127.0.0.1", m.services.port + offset))
    return claims


# The ports of the apps on a runtime that runs them on this host (apps == "command"), as offsets from services.port:
# each track alternates between its two ports at every blue/green restart, so a restarted app never needs a random
# port (docs/operations.md#ports-on-the-local-runtime).
LOCAL_APP_PORTS: dict[int, str] = {0: "stable app", 1: "canary app", 2: "stable app, next", 3: "canary app, next"}


def local_app_ports(m: Manifest, track: Track) -> tuple[int, int]:
    """(first, second) port of a track's app on the local runtime: stable services.port / +2, canary +1 / +3."""
    first = m.services.port + (0 if track == "stable" else 1)
    return first, first + 2
