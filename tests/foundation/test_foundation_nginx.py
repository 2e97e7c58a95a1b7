"""Real nginx (Debian nginx-light) on every generated nginx.conf: `nginx -t` with compose service names resolvable
only through a test hosts file, and real traffic through the local-target config to two tiny upstream servers."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support import LocalNginx, free_port

from swiftdeploy.checks import nginx_test
from swiftdeploy.render import NginxTarget, render_nginx

CANARY = ("  mode: stable", "  mode: canary")

VARIANTS = {
    "minimal": [],
    "example": [],
    "example-canary": [CANARY],
    "canary-weight-0": [CANARY, ("  weight: 10", "  weight: 0")],
    "canary-weight-100": [CANARY, ("  weight: 10", "  weight: 100")],
    "embedded-opa-engine": [("  engine: auto", "  engine: embedded")],
    "custom-names": [
        CANARY,
        ("  name: app\n", "  name: billing_api\n"),
        ("  port: 3000", "  port: 9000"),
        ("proxy_timeout: 30s", "proxy_timeout: 250ms"),
    ],
}


def _variant(manifests, minimal_text, name):
    if name == "minimal":
        return manifests.load(minimal_text)
    return manifests.load(manifests.example_text(*VARIANTS[name]))


def _names(m) -> list[str]:
    return [m.services.name] + ([m.canary_name] if m.services.mode == "canary" else [])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_docker_nginx_conf_passes_nginx_t(manifests, minimal_text, nginx_t, variant):
    m = _variant(manifests, minimal_text, variant)
    conf = m.out_dir / "nginx.conf"
    conf.write_text(render_nginx(m), encoding="utf-8")
    done = nginx_t.run(conf, _names(m))
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_service_names_resolve_only_through_the_test_hosts_file(manifests, nginx_t):
    m = manifests.load(manifests.example_text(CANARY))
    for name in _names(m):  # the premise: the host itself cannot resolve the compose names
        if subprocess.run(["getent", "hosts", name], capture_output=True).returncode == 0:
            pytest.skip(f"this host resolves {name!r} itself")
    conf = m.out_dir / "nginx.conf"
    conf.write_text(render_nginx(m), encoding="utf-8")
    done = nginx_t.run(conf, [m.services.name])  # the canary name left out on purpose
    assert done.returncode != 0
    assert "host not found in upstream" in done.stderr and "app-canary:3000" in done.stderr


@pytest.mark.parametrize("variant", ["example-canary", "canary-weight-0", "custom-names"])
def test_handover_config_needs_only_the_canary(manifests, minimal_text, nginx_t, variant):
    """`promote stable` hands every route to the canary while the stable container is replaced: that config must
    load with only the canary's name resolvable (the stable container may be gone at that moment)."""
    m = _variant(manifests, minimal_text, variant)
    target = NginxTarget.docker(m).all_to_canary()
    text = render_nginx(m, target)
    assert f"server {m.canary_name}:{m.services.port} max_fails=0;" in text
    assert f"server {m.services.name}:" not in text
    conf = m.out_dir / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    done = nginx_t.run(conf, [m.canary_name])
    assert done.returncode == 0, done.stderr
    with pytest.raises(ValueError, match="mode must be canary"):
        NginxTarget.docker(manifests.load(minimal_text)).all_to_canary()


@pytest.mark.parametrize("variant", ["example", "example-canary", "canary-weight-0", "custom-names"])
def test_local_nginx_conf_passes_nginx_t(manifests, minimal_text, nginx_t, tmp_path, variant):
    m = _variant(manifests, minimal_text, variant)
    target = NginxTarget.local(m, tmp_path / "state", 4100, 4101 if m.services.mode == "canary" else None)
    for folder in target.required_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "state" / "nginx" / "nginx.conf"
    conf.write_text(render_nginx(m, target), encoding="utf-8")
    done = nginx_t.run(conf, [], private_tmp=False)
    assert done.returncode == 0, done.stderr


def test_validate_helper_reports_how_it_checked(manifests, nginx_binary):
    m = manifests.load(manifests.example_text(CANARY))
    result = nginx_test(render_nginx(m), _names(m), nginx=nginx_binary, private_tmp=True)
    assert result.ok, result.output
    assert "test is successful" in result.output and "/proc/self/fd" not in result.output
    assert "app, app-canary" in result.method
    broken = nginx_test(
        render_nginx(m).replace("keepalive 16;", "keepalive;"), _names(m), nginx=nginx_binary, private_tmp=True
    )
    assert not broken.ok and "nginx.conf:" in broken.output


def test_validate_helper_fallback_rewrites_names_and_says_so(manifests, nginx_binary, tmp_path, monkeypatch):
    """Without a private namespace (not root / no unshare) the check runs on a copy with the names rewritten."""
    from swiftdeploy import checks

    monkeypatch.setattr(checks, "can_map_hosts", lambda: False)
    m = manifests.load(manifests.example_text(CANARY))
    # Docker-style upstream names, but pid/temp paths in tmp_path so nginx -t touches nothing outside the test.
    target = dataclasses.replace(
        NginxTarget.docker(m), pid_path=str(tmp_path / "nginx.pid"), temp_dir=str(tmp_path), access_log=None
    )
    text = render_nginx(m, target)
    result = nginx_test(text, _names(m), nginx=nginx_binary, private_tmp=True)
    assert result.ok, result.output
    assert "rewritten to 127.0.0.1" in result.method and "app, app-canary" in result.method
    assert "(not root)" in result.method or "(no unshare binary)" in result.method


# --- real traffic through the local-target config ---------------------------------------------------------------


class _Upstream:
    """A tiny HTTP server standing in for one track: echoes its mode and path, sets X-Mode, can be slow."""

    def __init__(self, mode: str, delay: float = 0.0) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                time.sleep(delay)
                body = json.dumps({"mode": mode, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("X-Mode", mode)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # nginx hangs up on a slow track after its timeout; that broken pipe is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _local_manifest(manifests, *, mode: str, weight: int = 50, timeout: str = "30s"):
    public, admin = free_port(), free_port()
    text = (
        f"services: {{image: demo:1, port: 3000, mode: {mode}}}\n"
        f"canary: {{weight: {weight}}}\n"
        f"nginx: {{port: {public}, admin_port: {admin}, proxy_timeout: {timeout}, contact: sre@example.org}}\n"
        "runtime: local\n"
    )
    return manifests.load(text)


@pytest.fixture
def tracks():
    started: list[_Upstream] = []

    def start(mode: str, delay: float = 0.0) -> _Upstream:
        started.append(_Upstream(mode, delay))
        return started[-1]

    yield start
    for upstream in started:
        upstream.stop()


def test_stable_mode_traffic(manifests, nginx_binary, tracks, tmp_path):
    m = _local_manifest(manifests, mode="stable")
    stable = tracks("stable")
    public, admin = f"http://127.0.0.1:{m.nginx.port}", f"http://127.0.0.1:{m.nginx.admin_port}"
    with LocalNginx(nginx_binary, m, tmp_path / "state", stable.port, None):
        status, headers, body = _get(public + "/hello?x=1", {"X-Canary": "always"})
        assert status == 200 and json.loads(body) == {"mode": "stable", "path": "/hello?x=1"}
        assert headers["X-Mode"] == "stable" and headers["X-Deployed-By"] == "swiftdeploy"
        for path in ("/metrics", "/chaos", "/chaos/x", "/stable/metrics", "/canary/healthz", "/%6detrics"):
            status, headers, body = _get(public + path)
            assert status == 404, path
            assert json.loads(body)["code"] == 404 and headers["X-Deployed-By"] == "swiftdeploy"
        status, _, body = _get(admin + "/stable/metrics")
        assert status == 200 and json.loads(body)["path"] == "/metrics"
        status, headers, body = _get(admin + "/canary/metrics")
        assert status == 503 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body) == {
            "error": "no canary track running",
            "code": 503,
            "service": "app-canary",
            "contact": "sre@example.org",
        }
        assert _get(admin + "/")[0] == 404
    lines = (tmp_path / "state" / "logs" / "nginx-access.log").read_text().splitlines()
    assert any(
        re.fullmatch(rf"\S+ \| 200 \| \d+\.\d{{3}}s \| 127\.0\.0\.1:{stable.port} \| GET /hello\?x=1 HTTP/1\.1", line)
        for line in lines
    ), lines


def test_canary_split_override_and_admin(manifests, nginx_binary, tracks, tmp_path):
    m = _local_manifest(manifests, mode="canary", weight=50)
    stable, canary = tracks("stable"), tracks("canary")
    public, admin = f"http://127.0.0.1:{m.nginx.port}", f"http://127.0.0.1:{m.nginx.admin_port}"
    with LocalNginx(nginx_binary, m, tmp_path / "state", stable.port, canary.port):
        seen = [_get(public + "/")[1]["X-Mode"] for _ in range(120)]
        # One client, one source address: the per-request key still splits (each side ~60; both > 0 w.p. 1-2^-119).
        assert 0 < seen.count("canary") < 120
        assert {_get(public + "/", {"X-Canary": "always"})[1]["X-Mode"] for _ in range(15)} == {"canary"}
        assert {_get(public + "/", {"X-Canary": "NEVER"})[1]["X-Mode"] for _ in range(15)} == {"stable"}
        for track in ("stable", "canary"):
            for path in ("metrics", "healthz", "chaos"):
                status, headers, body = _get(f"{admin}/{track}/{path}?probe=1")
                assert status == 200 and json.loads(body) == {"mode": track, "path": f"/{path}?probe=1"}
                assert headers["X-Deployed-By"] == "swiftdeploy"
        canary.stop()  # the canary track dies: admin and pinned public requests get the JSON 502
        status, headers, body = _get(admin + "/canary/healthz")
        assert status == 502 and set(json.loads(body)) == {"error", "code", "service", "contact"}
        status, headers, body = _get(public + "/", {"X-Canary": "always"})
        assert status == 502 and json.loads(body)["code"] == 502 and headers["X-Deployed-By"] == "swiftdeploy"


@pytest.mark.parametrize(("weight", "expected"), [(0, {"stable"}), (100, {"canary"})])
def test_canary_weight_extremes(manifests, nginx_binary, tracks, tmp_path, weight, expected):
    m = _local_manifest(manifests, mode="canary", weight=weight)
    stable, canary = tracks("stable"), tracks("canary")
    with LocalNginx(nginx_binary, m, tmp_path / "state", stable.port, canary.port):
        assert {_get(f"http://127.0.0.1:{m.nginx.port}/")[1]["X-Mode"] for _ in range(40)} == expected


def test_upstream_timeout_is_a_json_504(manifests, nginx_binary, tracks, tmp_path):
    m = _local_manifest(manifests, mode="stable", timeout="300ms")
    slow = tracks("stable", delay=2.0)
    with LocalNginx(nginx_binary, m, tmp_path / "state", slow.port, None):
        status, headers, body = _get(f"http://127.0.0.1:{m.nginx.port}/")
        assert status == 504 and headers["Content-Type"].startswith("application/json")
        data = json.loads(body)
        assert data["code"] == 504 and "300ms" in data["error"] and data["contact"] == "sre@example.org"
