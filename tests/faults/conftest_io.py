"""Helpers of the I/O fault tests (test_faults_opa.py, test_faults_readers.py, test_faults_policy_input.py): a
misbehaving HTTP server on 127.0.0.1 (a plain socket server: it can trickle, stall, close mid-answer or lie about
its encoding, which no real HTTP server does on purpose), the gzip bomb, a manifest whose policy engine is the OPA
at a given port, and running the CLI with a deadline and an address-space limit.

Imported as `from conftest_io import ...` (tests/faults is on sys.path under pytest's default import mode); it is not
a conftest.py, so it defines no fixtures of its own.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support import SWIFTDEPLOY

# A handler gets the connected socket and the request's first line and headers (lowercased names); it writes
# whatever it likes and returns. `stop` is set when the server closes: long handlers check it.
Handler = Callable[[socket.socket, "Request", threading.Event], None]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StubServer:
    """A threaded HTTP-ish server on 127.0.0.1:<port>: `routes` maps a path prefix to a handler; every request
    is recorded in `requests`."""

    routes: dict[str, Handler]
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> Iterator[StubServer]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        threads: list[threading.Thread] = []

        def accept() -> None:
            while not self.stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
                thread.start()
                threads.append(thread)

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        try:
            yield self
        finally:
            self.stop.set()
            acceptor.join(5)
            listener.close()
            for thread in threads:
                thread.join(5)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = _read_request(conn)
            except OSError:
                return
            if request is None:
                return
            self.requests.append(request)
            for prefix, handler in self.routes.items():
                if request.path.startswith(prefix):
                    with contextlib.suppress(OSError):  # the client gave up: that is the point of most stubs
                        handler(conn, request, self.stop)
                    return
            with contextlib.suppress(OSError):
                send(conn, 404, b"{}")


@contextlib.contextmanager
def stub_server(routes: dict[str, Handler]) -> Iterator[StubServer]:
    yield from StubServer(routes).serve()


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Request(method, path, headers, body)


def response_head(status: int, length: int | None, content_type: str = "application/json", **extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send(conn: socket.socket, status: int, body: bytes, content_type: str = "application/json", **extra: str) -> None:
    conn.sendall(response_head(status, len(body), content_type, **extra) + body)


def answer(body: bytes, status: int = 200, content_type: str = "application/json", **extra: str) -> Handler:
    """A handler answering `body` at once."""
    return lambda conn, request, stop: send(conn, status, body, content_type, **extra)


def trickle(data: bytes, every: float = 1.0) -> Handler:
    """A handler sending `data` (a whole response, head included) one byte every `every` seconds."""

    def handler(conn: socket.socket, request: Request, stop: threading.Event) -> None:
        for byte in data:
            if stop.wait(every):
                return
            conn.sendall(bytes([byte]))

    return handler


def silent(conn: socket.socket, request: Request, stop: threading.Event) -> None:
    """Read the request, never answer (until the server stops)."""
    stop.wait(120)


def hang_up(conn: socket.socket, request: Request, stop: threading.Event) -> None:
    """Read the request, close without a byte."""


def cut(head: bytes, sent: bytes) -> Handler:
    """Send `head` (promising more) and `sent`, then close mid-body."""
    return lambda conn, request, stop: conn.sendall(head + sent)


def stream(head: bytes, chunk: bytes, total: int) -> Handler:
    """Send `head`, then `chunk` repeatedly up to `total` bytes (a huge body, never held in memory)."""

    block = chunk * max(1, 65536 // len(chunk))  # whole chunks, ~64 KiB a send: a 4 MiB body is 64 sends

    def handler(conn: socket.socket, request: Request, stop: threading.Event) -> None:
        conn.sendall(head)
        sent = 0
        while sent < total and not stop.is_set():
            conn.sendall(block)
            sent += len(block)

    return handler


_BOMB: bytes | None = None


def gzip_bomb() -> bytes:
    """A valid gzip stream of 2 GiB of zeros in ~2 MB: one full-flushed deflate block of 1 MiB of zeros repeated
    (a full flush resets the compressor, so every further MiB compresses to the same bytes), with a correct
    trailer. Built in well under a second, cached."""
    global _BOMB
    if _BOMB is None:
        mib = bytes(1 << 20)
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
        again = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(2048):
            crc = zlib.crc32(mib, crc)
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        trailer = crc.to_bytes(4, "little") + ((2048 << 20) & 0xFFFFFFFF).to_bytes(4, "little")
        _BOMB = header + first + again * 2047 + deflate.flush() + trailer
    return _BOMB


def opa_manifest(folder: Path, port: int, *, timeout: float = 1.0) -> Path:
    """folder/manifest.yaml (local runtime) whose policy engine is only the OPA at 127.0.0.1:<port>."""
    path = folder / "manifest.yaml"
    path.write_text(
        "services: {image: swift-deploy-1-node:latest, port: 3000}\n"
        "nginx: {image: nginx:latest, port: 8080}\n"
        "runtime: local\n"
        "policy: {engine: opa}\n"
        f"opa: {{port: {port}, timeout: {timeout:g}}}\n",
        encoding="utf-8",
    )
    return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(
    *args: str,
    timeout: float = 60,
    address_space_mb: int | None = None,
    stdin: int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """`swiftdeploy ARGS...` as a subprocess with a hard deadline (a hang fails the test instead of blocking the
    run) and, with `address_space_mb`, RLIMIT_AS set in the child (a reader that holds a big line hits
    MemoryError)."""
    limit = None if address_space_mb is None else address_space_mb << 20

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.monotonic()
    done = subprocess.run(
        [SWIFTDEPLOY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
        preexec_fn=limited,
        cwd=cwd,
        env={**(env or os.environ), "COLUMNS": "200", "NO_COLOR": "1"},
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def child_peak_rss_mb(*args: str, timeout: float = 600) -> tuple[int, float]:
    """(exit code, peak resident memory in MB) of `swiftdeploy ARGS...`, measured by a fresh Python parent so no
    earlier child's peak is mixed in."""
    probe = (
        "import resource, subprocess, sys; "
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, SWIFTDEPLOY, *args], capture_output=True, text=True, timeout=timeout
    ).stdout.split()
    return int(out[0]), float(out[1])
