"""Bounded HTTP requests to 127.0.0.1: the local runtime's health polls, the operations' calls to the admin
listener, the /metrics scrapes, the dashboard's health checks, the traffic generator and the OPA engine's queries.
httpx (the project's one HTTP client) is imported on the first request. Every request in swiftdeploy goes through
`fetch` (or its wrappers `request`, `get_text`).

- Bounded in time, as a whole: `timeout` is one deadline for connecting, sending, the headers and the whole body.
  Each socket read and write waits at most the time left (a server trickling a byte a second cannot stretch the
  request read by read: at the deadline it raises TimedOut), and the body is read in chunks with the deadline
  checked between them.
- Bounded in size: at most `limit` bytes of the body are read. `truncate=True` (health polls) keeps the first
  `limit` bytes and drops the rest unread; `truncate=False` refuses a longer answer (Unacceptable) after reading
  at most `limit + 1` bytes (a declared Content-Length above the limit is refused before any byte of the body).
- No content encoding: requests say `Accept-Encoding: identity` and the raw bytes are read (nothing is ever
  decompressed, so no compressed "bomb" can inflate in memory); an answer that is compressed anyway is refused
  (Unacceptable).
- One connection per request (the shared client keeps no idle connection): a graceful nginx reload that closes
  idle keep-alive connections can never fail a health check, exactly like one `curl` per check.
- No proxy from the environment (`trust_env=False`): an `http_proxy` must not capture 127.0.0.1 URLs.
- Unix sockets: `http+unix://<percent-encoded socket path>/<path>` (the swarm runtime's admin listener, see
  `unix_url`) is the same request over that socket, with the same bounds; each socket gets one client of its own
  (an httpx transport with `uds=`), built once and shared like the TCP one. A socket that does not exist, is not a
  socket or refuses is Unreachable.

The client is built once per process (building one loads the CA bundle: ~40 ms) and shared by threads; the traffic
generator passes a `pooled_client` (kept-alive connections) instead; tests pass an httpx `transport` (e.g.
MockTransport), which gets a client of its own for that request.
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "swiftdeploy"
IDENTITY = ("", "identity")
UNIX_SCHEME = "http+unix"
UNIX_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 bytes with its terminating NUL on Linux)
_client: Any = None
_unix_clients: dict[str, Any] = {}
_UNIX_CLIENTS_MAX = 8
_client_lock = threading.Lock()


class NoAnswer(OSError):
    """No usable HTTP answer: refused, timed out, reset, not HTTP, or refused by the bounds. `str()` names the
    reason, e.g. `ConnectError: [Errno 111] Connection refused`."""


class Unreachable(NoAnswer):
    """Connecting failed (refused, no route): nothing listens there."""


class TimedOut(NoAnswer):
    """The request's deadline (`timeout`, the whole request) passed before the answer was complete."""


class Unacceptable(NoAnswer):
    """An answer outside the bounds: a body over the limit (with truncate=False) or a content encoding."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str  # the media type, lowercased, without parameters ("application/json"); "" when absent
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive (httpx.Headers)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _client_settings() -> dict[str, Any]:
    import httpx

    return {
        "trust_env": False,
        "headers": {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        "limits": httpx.Limits(max_keepalive_connections=0),
    }


def _shared_client() -> Any:
    global _client
    with _client_lock:
        if _client is None:
            import httpx

            _client = httpx.Client(**_client_settings())
        return _client


def _unix_client(socket_path: str) -> Any:
    """The shared client of one unix socket (one connection per request, like the TCP client)."""
    with _client_lock:
        client = _unix_clients.get(socket_path)
        if client is None:
            import httpx

            if len(_unix_clients) >= _UNIX_CLIENTS_MAX:  # a process talks to one or two sockets: keep a few
                _unix_clients.pop(next(iter(_unix_clients))).close()
            settings = _client_settings()
            transport = httpx.HTTPTransport(uds=socket_path, limits=settings.pop("limits"))
            client = _unix_clients[socket_path] = httpx.Client(transport=transport, **settings)
        return client


def unix_url(socket_path: str | os.PathLike[str], path: str) -> str:
    """`http+unix://%2Fstate%2Fadmin%2Fadmin.sock/stable/metrics`: `path` on the HTTP server listening on the unix
    socket `socket_path` (the socket path percent-encoded into the URL's host part)."""
    from urllib.parse import quote

    return f"{UNIX_SCHEME}://{quote(os.fspath(socket_path), safe='')}/{path.lstrip('/')}"


def split_unix_url(url: str) -> tuple[str, str] | None:
    """(socket path, the same request as an `http://localhost/...` URL) of an http+unix URL; None for any other."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != UNIX_SCHEME:
        return None
    from urllib.parse import unquote

    host, slash, path = rest.partition("/")
    return unquote(host), f"http://localhost{slash}{path}"


class _Deadline:
    """The time left of one request. Every connection's network stream is wrapped once (`bound`, through httpx's
    `trace` extension when the connection is made) so that each read and write waits at most the time left of
    the request running on it now (`_CURRENT`, set by `fetch` in its thread): httpcore asks its streams with the
    request's per-operation timeout, which a trickle never exceeds. A kept-alive connection (`pooled_client`)
    serves each later request with that request's own deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def left(self) -> float:
        import httpcore

        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout(f"no complete answer within {self.timeout:g} s")
        return remaining

    @staticmethod
    def bound(stream: Any) -> None:
        if getattr(stream, "_swiftdeploy_bounded", False):
            return
        read, write = stream.read, stream.write

        def bounded(timeout: float | None) -> float | None:
            deadline = _CURRENT.get()
            if deadline is None:
                return timeout
            return min(timeout if timeout is not None else deadline.timeout, deadline.left())

        def bounded_read(max_bytes: int, timeout: float | None = None) -> bytes:
            return read(max_bytes, timeout=bounded(timeout))

        def bounded_write(buffer: bytes, timeout: float | None = None) -> None:
            return write(buffer, timeout=bounded(timeout))

        stream.read, stream.write = bounded_read, bounded_write
        stream._swiftdeploy_bounded = True

    @staticmethod
    def trace(event: str, info: Mapping[str, Any]) -> None:
        """httpx's `trace` extension: bound each new connection's stream (plain TCP, or TLS on top of it)."""
        if event in _CONNECTED:
            stream = info.get("return_value")
            if stream is not None:
                _Deadline.bound(stream)


_CONNECTED = (
    "connection.connect_tcp.complete",
    "connection.connect_unix_socket.complete",
    "connection.start_tls.complete",
)
_CURRENT: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("swiftdeploy_deadline", default=None)


def pooled_client(connections: int) -> Any:
    """A client keeping up to `connections` connections alive, for `fetch(client=...)` from many threads (the
    traffic generator); the caller closes it. Same settings as the shared client otherwise."""
    import httpx

    settings = _client_settings()
    settings["limits"] = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(**settings)


def fetch(
    method: str,
    url: str,
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    limit: int = 65536,
    truncate: bool = True,
    transport: Any = None,
    client: Any = None,
) -> Answer:
    """One request, bounded in time (`timeout`: the whole request) and size (`limit` bytes of body; see the module
    doc for `truncate`). `json` is sent as a JSON body, `content` as raw bytes. Raises NoAnswer (Unreachable,
    TimedOut, Unacceptable, or NoAnswer itself for a reset or a non-HTTP answer). `client`: a `pooled_client`
    instead of the shared one; `transport` (tests): a client of its own for this request."""
    import httpx

    deadline = _Deadline(timeout)
    unix = split_unix_url(url)
    if unix is not None:
        socket_path, url = unix
        if client is not None and transport is None:
            raise ValueError("a pooled_client talks TCP: it cannot reach a unix socket")
        if not socket_path:
            raise Unreachable("ConnectError: the http+unix URL names no socket path")
        if len(os.fsencode(socket_path)) > UNIX_PATH_MAX:
            raise Unreachable(
                f"ConnectError: the socket path {socket_path} is longer than {UNIX_PATH_MAX} bytes (a unix socket "
                "path limit)"
            )
    sent_headers = dict(headers or {})
    if json is not None:
        content = jsonlib.dumps(json).encode()
        sent_headers.setdefault("Content-Type", "application/json")
    own = transport is not None
    if own:
        client = httpx.Client(transport=transport, **_client_settings())
    elif client is None:
        client = _shared_client() if unix is None else _unix_client(socket_path)
    token = _CURRENT.set(deadline)
    try:
        with client.stream(
            method,
            url,
            content=content,
            headers=sent_headers or None,
            params=params,
            timeout=timeout,
            extensions={"trace": _Deadline.trace},
        ) as response:
            return _read(response, url, deadline, limit, truncate)
    except httpx.TimeoutException as exc:
        raise TimedOut(f"{type(exc).__name__}: {exc or 'no answer'} (the whole request: {timeout:g} s)") from None
    except httpx.ConnectError as exc:
        raise Unreachable(f"ConnectError: {exc or 'connection refused'}") from None
    except httpx.HTTPError as exc:
        raise NoAnswer(f"{type(exc).__name__}: {exc or 'no answer'}") from None
    finally:
        _CURRENT.reset(token)
        if own:
            client.close()


def _read(response: Any, url: str, deadline: _Deadline, limit: int, truncate: bool) -> Answer:
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in IDENTITY:
        raise Unacceptable(f"it is {encoding}-encoded; swiftdeploy asks for identity and decodes no content encoding")
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise Unacceptable(f"it declares {declared} bytes, more than {limit} bytes (the limit)")
    body = bytearray()
    for chunk in response.iter_bytes():  # no decoder runs: any content encoding was refused above
        body += chunk
        if len(body) > limit:
            if truncate:
                break
            raise Unacceptable(f"more than {limit} bytes (the limit)")
        if deadline.passed():  # a trickle of small chunks stops at the deadline too
            raise TimedOut(f"the answer was not complete within {deadline.timeout:g} s (the whole request)")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return Answer(response.status_code, bytes(body[:limit]), content_type, response.headers)


def request(method: str, url: str, *, json: Any = None, timeout: float = 5.0, limit: int = 65536) -> tuple[int, bytes]:
    """(HTTP status, the first `limit` bytes of the body) of one request; `json` is sent as a JSON body.
    Raises NoAnswer when nothing answered in HTTP in time."""
    answer = fetch(method, url, json=json, timeout=timeout, limit=limit)
    return answer.status, answer.body


def get_text(url: str, *, timeout: float = 2.0, limit: int = 4096) -> tuple[int, str]:
    """(status, body as text) of a GET. Raises NoAnswer when nothing answered in HTTP in time."""
    answer = fetch("GET", url, timeout=timeout, limit=limit)
    return answer.status, answer.text()
