"""swiftdeploy.localhttp against a real HTTP server on 127.0.0.1: bounded in size and time, no proxy, and a
NoAnswer naming the reason when nothing answers; http+unix:// URLs against the real demo API on a unix socket."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import demo_api_env, stop_process, wait_until

from swiftdeploy.localhttp import (
    NoAnswer,
    TimedOut,
    Unacceptable,
    Unreachable,
    fetch,
    get_text,
    request,
    split_unix_url,
    unix_url,
)

BIG = 1 << 20  # 1 MiB body


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = b"x" * BIG if self.path == "/big" else json.dumps({"path": self.path}).encode()
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"got": json.loads(data), "type": self.headers["Content-Type"]}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_answers_of_any_status_are_returned(server: str) -> None:
    assert get_text(f"{server}/healthz") == (200, '{"path": "/healthz"}')
    assert get_text(f"{server}/missing")[0] == 404
    status, body = request("POST", f"{server}/chaos", json={"mode": "recover"})
    assert status == 201 and json.loads(body) == {"got": {"mode": "recover"}, "type": "application/json"}


def test_the_body_read_is_bounded(server: str) -> None:
    status, body = request("GET", f"{server}/big", limit=4096)
    assert status == 200 and body == b"x" * 4096


def test_no_proxy_from_the_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: a proxied request would fail
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert get_text(f"{server}/healthz")[0] == 200


def test_refused_is_no_answer() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connecting is refused
        with pytest.raises(NoAnswer, match=r"^ConnectError: .*refused"):
            get_text(f"http://127.0.0.1:{port}/healthz")


def test_a_silent_server_is_no_answer_after_the_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts the connection (in the kernel) and never answers
        with pytest.raises(NoAnswer, match=r"^ReadTimeout"):
            get_text(f"http://127.0.0.1:{sock.getsockname()[1]}/healthz", timeout=0.3)


# --- http+unix:// (the swarm runtime's admin listener is a unix socket) -----------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket path has at most 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="sd-uds-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def uds_api(short_dir: Path) -> Iterator[Path]:
    """The real demo API served by uvicorn on a unix socket (`uvicorn --uds`)."""
    sock = short_dir / "admin.sock"
    log = short_dir / "uvicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "demo_api.app:create_app", "--factory", "--uds", str(sock)],
            env=demo_api_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _answers(sock), proc, "uvicorn --uds", 20.0, log)
        yield sock
    finally:
        stop_process(proc)


def _answers(sock: Path) -> bool:
    try:
        return get_text(unix_url(sock, "/healthz"), timeout=1.0)[0] == 200
    except NoAnswer:
        return False


def test_unix_url_round_trips_the_socket_path() -> None:
    url = unix_url("/srv/state dir/admin/admin.sock", "/stable/metrics")
    assert url == "http+unix://%2Fsrv%2Fstate%20dir%2Fadmin%2Fadmin.sock/stable/metrics"
    assert split_unix_url(url) == ("/srv/state dir/admin/admin.sock", "http://localhost/stable/metrics")
    assert split_unix_url("http://127.0.0.1:8081/stable/metrics") is None


def test_a_unix_socket_server_answers_with_the_same_bounds(uds_api: Path) -> None:
    status, text = get_text(unix_url(uds_api, "/healthz"))
    assert status == 200 and json.loads(text)["status"] == "ok"
    answer = fetch("GET", unix_url(uds_api, "/metrics"), limit=1 << 20, truncate=False)
    assert answer.status == 200 and b"http_requests_total" in answer.body
    # the size cap: a longer answer is refused (truncate=False) or cut (truncate=True)
    with pytest.raises(Unacceptable, match="the limit"):
        fetch("GET", unix_url(uds_api, "/metrics"), limit=64, truncate=False)
    assert len(fetch("GET", unix_url(uds_api, "/metrics"), limit=64).body) == 64
    # POST with a JSON body over the socket
    status, body = request("POST", unix_url(uds_api, "/chaos"), json={"mode": "recover"})
    assert status == 200, body


def test_a_missing_or_refusing_socket_is_unreachable(short_dir: Path) -> None:
    with pytest.raises(Unreachable, match=r"^ConnectError"):
        get_text(unix_url(short_dir / "missing.sock", "/healthz"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(short_dir / "bound.sock"))  # bound, never listening: connecting is refused
        with pytest.raises(Unreachable, match=r"^ConnectError"):
            get_text(unix_url(short_dir / "bound.sock", "/healthz"))
    with pytest.raises(Unreachable, match="longer than 107 bytes"):
        get_text(unix_url("/" + "x" * 120, "/healthz"))


def test_a_silent_unix_socket_times_out(short_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(short_dir / "silent.sock"))
        sock.listen(1)  # accepts the connection (in the kernel) and never answers
        with pytest.raises(TimedOut, match=r"^ReadTimeout"):
            get_text(unix_url(short_dir / "silent.sock", "/healthz"), timeout=0.3)
