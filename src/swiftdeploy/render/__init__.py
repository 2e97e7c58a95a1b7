"""Pure string builders: manifest -> every generated file. No template engine, no I/O; deterministic output."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import header, header_text
from .compose import render_compose
from .nginx import NginxTarget, render_nginx
from .stack import NGINX_ROOT_USER, STACK_FILE, render_stack

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..policy.bundle import PolicySet

COMPOSE_FILE = "docker-compose.yml"
NGINX_FILE = "nginx.conf"

__all__ = [
    "COMPOSE_FILE",
    "NGINX_FILE",
    "NginxTarget",
    "STACK_FILE",
    "header",
    "header_text",
    "render_all",
    "render_compose",
    "render_nginx",
    "render_stack",
]


def render_all(m: Manifest, policies: PolicySet, *, nginx_user: str = NGINX_ROOT_USER) -> dict[str, str]:
    """Relative path (under m.out_dir) -> text, for every generated file, in a stable order. Pure: `policies` is
    the policy set already read (`swiftdeploy.policy.bundle.load_policy_set(m)`; `generate.files(m)` does both).
    The swarm runtime gets docker-stack.yml instead of docker-compose.yml (`nginx_user`: render/stack.py)."""
    from ..policy.bundle import render_bundle

    if m.runtime == "swarm":
        files = {STACK_FILE: render_stack(m, nginx_user=nginx_user), NGINX_FILE: render_nginx(m, NginxTarget.swarm(m))}
    else:
        files = {COMPOSE_FILE: render_compose(m), NGINX_FILE: render_nginx(m)}
    files.update(sorted(render_bundle(policies).items()))
    return files
