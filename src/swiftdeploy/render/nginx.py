"""manifest -> nginx.conf (docs/contracts.md#nginxconf). A pure string builder: no template engine, no I/O.

Two listeners: the public one (proxy to stable, or a per-request split between stable and canary) and the admin one
(per-track /metrics, /healthz, /chaos, bound to 127.0.0.1 on the host). The same builder serves nginx in a container
(`NginxTarget.docker`: upstreams are compose service names; the generated nginx.conf) and nginx on the host
(`NginxTarget.local`: upstreams on 127.0.0.1, paths in the state folder); `NginxTarget` holds everything that differs
between the two. Which one a runtime runs is its RuntimeSpec's `nginx` (swiftdeploy.runtime).

The file never includes another file and sets its own pid, temp and log paths, so it runs unchanged on the
official nginx image, on Debian's nginx-light, and as a non-root user. Start it with `-g 'daemon off;'` when it
must stay in the foreground; the file itself has no `daemon` line (the official image passes one on its command
line and nginx refuses a duplicate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .common import header, nginx_duration, nginx_literal, nginx_quote

if TYPE_CHECKING:
    from ..manifest import Manifest

# Upstream group names inside nginx.conf (not host names).
STABLE, CANARY = "stable", "canary"
ADMIN_PATHS = ("metrics", "healthz", "chaos")
# Reachable only through the admin listener; the public listener answers 404 for these prefixes.
PUBLIC_CLOSED = ("metrics", "chaos", STABLE, CANARY)
IPV4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
LOG_FORMAT = "$time_iso8601 | $status | ${request_time}s | $upstream_addr | $request"
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class NginxTarget:
    """Where the generated nginx runs. Paths set to None fall back to the nginx build's defaults.

    stable_upstream / canary_upstream: "host:port" of each track ("app:3000" in docker, "127.0.0.1:3000" locally).
    canary_upstream must be set exactly when the manifest's mode is canary.
    public_listen / admin_listen: the `listen` argument ("8080" in a container, "127.0.0.1:8080" locally).
    temp_dir: folder for client_body/proxy/fastcgi/uwsgi/scgi temp paths (each `<temp_dir>/nginx-<kind>`).
    error_log: a path or "stderr"; access_log: a path ("/dev/stdout" in a container).
    host_paths: the paths are on this host (not in a container), so `required_dirs()` lists their folders.
    kind: a label for the file's header comment ("docker", "local", "swarm").
    resolver: a DNS server nginx asks at request time (swarm: Docker's 127.0.0.11). Then the tracks are not
    `upstream` groups resolved once at start but names re-resolved every second, so nginx follows a track's tasks as
    Swarm adds, moves and replaces them (a dnsrr name answers every running task's address; nginx round-robins over
    them and tries the next address when one does not connect).
    connect_timeout: proxy_connect_timeout when it must be shorter than nginx.proxy_timeout (swarm: a task on a
    lost node never answers a SYN; nginx gives up on that address after this and tries the next one).
    task_port: the app's port for the per-task admin paths `/task/<IPv4>/{metrics,healthz,chaos}` (swarm: every
    replica is read on its own; the CLI learns the addresses from the engine).
    """

    kind: str
    stable_upstream: str
    canary_upstream: str | None
    public_listen: str
    admin_listen: str
    pid_path: str | None = None
    error_log: str | None = None
    access_log: str | None = None
    temp_dir: str | None = None
    host_paths: bool = False
    resolver: str | None = None
    connect_timeout: str | None = None
    task_port: int | None = None

    @classmethod
    def docker(cls, m: Manifest) -> NginxTarget:
        """In a container: compose service names, /tmp for pid and temp files, logs to the container's stdio."""
        port = m.services.port
        return cls(
            kind="docker",
            stable_upstream=f"{m.services.name}:{port}",
            canary_upstream=f"{m.canary_name}:{port}" if m.services.mode == "canary" else None,
            public_listen=str(m.nginx.port),
            # The container listens on all its interfaces; compose publishes it on 127.0.0.1 only.
            admin_listen=str(m.nginx.admin_port),
            pid_path="/tmp/nginx.pid",
            error_log="stderr",
            access_log="/dev/stdout",
            temp_dir="/tmp",
        )

    @classmethod
    def swarm(cls, m: Manifest) -> NginxTarget:
        """In a Swarm task: the tracks are dnsrr service names resolved at request time; the admin listener is a
        unix socket in a folder bind-mounted from the manager's state folder (runtime.admin_socket), never a port."""
        from .stack import ADMIN_SOCKET

        docker = cls.docker(m)
        return replace(
            docker,
            kind="swarm",
            admin_listen=f"unix:{ADMIN_SOCKET}",
            resolver="127.0.0.11",
            connect_timeout=nginx_duration(min(1.0, m.nginx.proxy_timeout)),
            task_port=m.services.port,
        )

    @classmethod
    def local(cls, m: Manifest, state_dir: Path, stable_port: int, canary_port: int | None = None) -> NginxTarget:
        """On the host: tracks on 127.0.0.1, both listeners on 127.0.0.1, every path under the state folder.

        Create `required_dirs()` before starting nginx (nginx creates only the last level of a temp path).
        """
        if m.services.mode == "canary" and canary_port is None:
            raise ValueError("the manifest's mode is canary: NginxTarget.local needs canary_port")
        state = Path(state_dir)
        return cls(
            kind="local",
            stable_upstream=f"127.0.0.1:{stable_port}",
            canary_upstream=f"127.0.0.1:{canary_port}" if m.services.mode == "canary" else None,
            public_listen=f"127.0.0.1:{m.nginx.port}",
            admin_listen=f"127.0.0.1:{m.nginx.admin_port}",
            pid_path=str(state / "nginx" / "nginx.pid"),
            error_log=str(state / "logs" / "nginx-error.log"),
            access_log=str(state / "logs" / "nginx-access.log"),
            temp_dir=str(state / "nginx" / "tmp"),
            host_paths=True,
        )

    def all_to_canary(self) -> NginxTarget:
        """The handover target of `promote stable`: the stable upstream points at the canary as well, so every route
        (the public split, `X-Canary` pins, admin /stable/*) reaches the canary while the stable app is replaced."""
        if self.canary_upstream is None:
            raise ValueError("all_to_canary needs a canary upstream: the manifest's mode must be canary")
        return replace(self, stable_upstream=self.canary_upstream)

    def required_dirs(self) -> list[Path]:
        """Folders that must exist before nginx starts (none in a container: its paths are in /tmp)."""
        if not self.host_paths:
            return []
        paths = [self.pid_path, self.error_log, self.access_log]
        dirs = {Path(p).parent for p in paths if p and p != "stderr" and not p.startswith("/dev/")}
        if self.temp_dir:
            dirs.add(Path(self.temp_dir))
        return sorted(dirs)


def render_nginx(m: Manifest, target: NginxTarget | None = None) -> str:
    """The complete nginx.conf text for `m` (docker target when `target` is None). Deterministic."""
    t = target or NginxTarget.docker(m)
    canary = m.services.mode == "canary"
    if canary != (t.canary_upstream is not None):
        raise ValueError(
            f"mode is {m.services.mode!r} but the nginx target {'lacks' if canary else 'has'} a canary upstream"
        )
    out: list[str] = [header(m)]
    admin = t.admin_listen if t.admin_listen.startswith("unix:") else f":{m.nginx.admin_port}"
    out.append(f"# Target: {t.kind}. Public listener :{m.nginx.port}, admin listener {admin}.\n")
    out += _main_context(t)
    out.append("http {\n")
    out += _indent(_http_context(m, t), 1)
    out.append("\n")
    out += _indent(_upstreams(t), 1)
    if canary:
        out.append("\n")
        out += _indent(_split(m, t), 1)
    out.append("\n")
    out += _indent(_public_server(m, t, canary), 1)
    out.append("\n")
    out += _indent(_admin_server(m, t, canary), 1)
    out.append("}\n")
    return "".join(out)


def _indent(lines: list[str], level: int) -> list[str]:
    pad = "    " * level
    return [pad + line if line.strip() else line for line in lines]


def _main_context(t: NginxTarget) -> list[str]:
    lines = ["worker_processes auto;\n"]
    if t.pid_path:
        lines.append(f"pid {nginx_quote(t.pid_path)};\n")
    if t.error_log:
        lines.append(f"error_log {_log_target(t.error_log)} warn;\n")
    lines += ["\n", "events {\n", "    worker_connections 1024;\n", "}\n", "\n"]
    return lines


def _log_target(value: str) -> str:
    return value if value == "stderr" else nginx_quote(value)


def _http_context(m: Manifest, t: NginxTarget) -> list[str]:
    timeout = nginx_duration(m.nginx.proxy_timeout)
    lines = [
        "# No mime.types include: its path differs between images, and every body nginx writes itself is JSON.\n",
        "default_type application/json;\n",
        "server_tokens off;\n",
        "charset utf-8;\n",
        "charset_types application/json;\n",
        "\n",
    ]
    if t.temp_dir:
        lines.append("# Temp paths the nginx process can write as any user, on any image.\n")
        for kind in TEMP_KINDS:
            path = f"{t.temp_dir}/nginx-{kind.replace('_', '-')}"
            lines.append(f"{kind}_temp_path {nginx_quote(path)};\n")
        lines.append("\n")
    if t.resolver:
        lines += [
            "# Track names are resolved at request time (re-asked every second): nginx follows the tasks.\n",
            f"resolver {t.resolver} valid=1s ipv6=off;\n",
            "resolver_timeout 2s;\n",
            "\n",
        ]
    lines += [
        f"log_format swiftdeploy '{LOG_FORMAT}';\n",
        f"access_log {nginx_quote(t.access_log)} swiftdeploy;\n" if t.access_log else "access_log off;\n",
        "\n",
        f"proxy_connect_timeout {t.connect_timeout or timeout};\n",
        f"proxy_read_timeout {timeout};\n",
        f"proxy_send_timeout {timeout};\n",
        "proxy_http_version 1.1;\n",
        'proxy_set_header Connection "";\n',
        "proxy_set_header Host $host;\n",
        "proxy_set_header X-Real-IP $remote_addr;\n",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
        "proxy_set_header X-Forwarded-Proto $scheme;\n",
        "proxy_set_header X-Request-ID $request_id;\n",
        "# Only errors nginx raises itself get the JSON bodies below; the app's own responses pass unchanged.\n",
        "proxy_intercept_errors off;\n",
    ]
    return lines


def _pass(t: NginxTarget, track: str) -> str:
    """proxy_pass's target for one track: its upstream group, or (with a resolver) the variable naming it."""
    return f"$swiftdeploy_{track}" if t.resolver else track


def _upstreams(t: NginxTarget) -> list[str]:
    if t.resolver:
        return _resolved_tracks(t)
    lines: list[str] = []
    tracks = [(STABLE, t.stable_upstream)] + ([(CANARY, t.canary_upstream)] if t.canary_upstream else [])
    for index, (name, address) in enumerate(tracks):
        if index:
            lines.append("\n")
        lines += [
            f"upstream {name} {{\n",
            # max_fails=0: never mark the only server down; every request gets a real attempt.
            f"    server {_address(address)} max_fails=0;\n",
            "    keepalive 16;\n",
            "}\n",
        ]
    return lines


def _resolved_tracks(t: NginxTarget) -> list[str]:
    """With a resolver: each track is a variable holding its host:port, so proxy_pass resolves it per request."""
    tracks = [(STABLE, t.stable_upstream)] + ([(CANARY, t.canary_upstream)] if t.canary_upstream else [])
    lines = ["# Each track's address (a variable, so nginx resolves the name at request time).\n"]
    for name, address in tracks:
        lines += [
            f"map $request_id $swiftdeploy_{name} {{\n",
            f"    default {nginx_quote(_address(address))};\n",
            "}\n",
        ]
    return lines


def _address(address: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not all(c.isalnum() or c in "._-" for c in host):
        raise ValueError(f"upstream address {address!r} must be host:port")
    return address


def _split(m: Manifest, t: NginxTarget) -> list[str]:
    weight = m.canary.weight
    if weight == 0:
        shares = ["    * stable;\n"]
    elif weight == 100:
        shares = ["    * canary;\n"]
    else:
        shares = [f"    {weight}% canary;\n", "    * stable;\n"]
    return [
        f"# {weight}% of public requests go to the canary. The key is random per request ($request_id),\n",
        "# so one client sees both tracks in proportion.\n",
        'split_clients "${request_id}" $swiftdeploy_split {\n',
        *shares,
        "}\n",
        "\n",
        "# `X-Canary: always` / `X-Canary: never` pins a request to one track (case-insensitive).\n",
        "map $http_x_canary $swiftdeploy_track {\n",
        "    default $swiftdeploy_split;\n",
        '    "~*^always$" canary;\n',
        '    "~*^never$" stable;\n',
        "}\n",
    ] + (_track_address(t) if t.resolver else [])


def _track_address(t: NginxTarget) -> list[str]:
    assert t.canary_upstream is not None
    return [
        "\n",
        "map $swiftdeploy_track $swiftdeploy_track_address {\n",
        f"    {CANARY} {nginx_quote(_address(t.canary_upstream))};\n",
        f"    default {nginx_quote(_address(t.stable_upstream))};\n",
        "}\n",
    ]


def _json_body(m: Manifest, error: str, code: int, service: str | None = None) -> str:
    body = {"error": error, "code": code, "service": service or m.services.name, "contact": m.nginx.contact}
    return nginx_literal(json.dumps(body, ensure_ascii=True, separators=(",", ":")))


def _error_pages(m: Manifest, timeout: str) -> list[str]:
    errors = {
        502: "bad gateway: the service did not answer",
        503: "service unavailable",
        504: f"gateway timeout: the service did not answer within {timeout}",
    }
    lines = [f"error_page {code} @error_{code};\n" for code in errors]
    for code, message in errors.items():
        lines += [
            f"location @error_{code} {{\n",
            f"    return {code} {_json_body(m, message, code)};\n",
            "}\n",
        ]
    return lines


def _server_common(listen: str) -> list[str]:
    return [
        f"listen {listen};\n",
        "server_name _;\n",
        # `always`: also on 4xx/5xx, including the JSON error bodies nginx writes itself.
        "add_header X-Deployed-By swiftdeploy always;\n",
        "\n",
    ]


def _public_server(m: Manifest, t: NginxTarget, canary: bool) -> list[str]:
    closed = "|".join(PUBLIC_CLOSED)
    body = [
        "# Public listener. Nothing here routes to OPA.\n",
        *_server_common(t.public_listen),
        "location / {\n",
        f"    proxy_pass http://{_public_pass(t, canary)};\n",
        "}\n",
        "\n",
        "# Metrics, chaos and the per-track admin paths exist only on the admin listener.\n",
        f'location ~ "^/({closed})(/|$)" {{\n',
        f"    return 404 {_json_body(m, 'not found', 404)};\n",
        "}\n",
        "\n",
        *_error_pages(m, nginx_duration(m.nginx.proxy_timeout)),
    ]
    return ["server {\n", *_indent(body, 1), "}\n"]


def _public_pass(t: NginxTarget, canary: bool) -> str:
    if not canary:
        return _pass(t, STABLE)
    return "$swiftdeploy_track_address" if t.resolver else "$swiftdeploy_track"


def _app_path(m: Manifest, admin_path: str) -> str:
    """The app's own path behind an admin path: `/<track>/healthz` reaches services.health_path."""
    return m.services.health_path if admin_path == "healthz" else f"/{admin_path}"


def _admin_server(m: Manifest, t: NginxTarget, canary: bool) -> list[str]:
    where = "a unix socket, no port" if t.admin_listen.startswith("unix:") else "127.0.0.1 only on the host"
    body = [
        f"# Admin listener: {where}. The CLI scrapes and injects chaos through it.\n",
        *_server_common(t.admin_listen),
    ]
    for path in ADMIN_PATHS:
        body += [
            f"location = /{STABLE}/{path} {{\n",
            f"    proxy_pass http://{_pass(t, STABLE)}{_app_path(m, path)};\n",
            "}\n",
        ]
    if canary:
        for path in ADMIN_PATHS:
            body += [
                f"location = /{CANARY}/{path} {{\n",
                f"    proxy_pass http://{_pass(t, CANARY)}{_app_path(m, path)};\n",
                "}\n",
            ]
    else:
        # No canary upstream in stable mode: a missing compose service would make nginx fail to start.
        body += [
            f"location ^~ /{CANARY}/ {{\n",
            f"    return 503 {_json_body(m, 'no canary track running', 503, m.canary_name)};\n",
            "}\n",
        ]
    if t.task_port is not None:
        body.append("# One task (replica) by its address on the stack's network: the CLI reads every replica.\n")
        for path in ADMIN_PATHS:
            body += [
                f'location ~ "^/task/(?<swiftdeploy_task>{IPV4})/{path}$" {{\n',
                f"    proxy_pass http://$swiftdeploy_task:{t.task_port}{_app_path(m, path)};\n",
                "}\n",
            ]
    body += [
        "location / {\n",
        f"    return 404 {_json_body(m, 'not found', 404)};\n",
        "}\n",
        "\n",
        *_error_pages(m, nginx_duration(m.nginx.proxy_timeout)),
    ]
    return ["server {\n", *_indent(body, 1), "}\n"]
