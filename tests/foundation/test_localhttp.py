"""swiftdeploy.localhttp against a real HTTP server on 127.0.0.1: bounded in size and time, no proxy, and a
NoAnswer naming the reason when nothing answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swiftdeploy.localhttp import NoAnswer, get_text, request

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
