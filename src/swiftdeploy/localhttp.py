"""Bounded HTTP requests to the stack on 127.0.0.1: the local runtime's health polls and the operations' calls to
the admin listener. httpx (the project's one HTTP client) is imported on the first request.

- Bounded in time: `timeout` applies to connecting and to every read and write, as a socket timeout does.
- Bounded in size: at most `limit` bytes of the body are read; the rest is dropped unread.
- One connection per request (the shared client keeps no idle connection): a graceful nginx reload that closes
  idle keep-alive connections can never fail a health check, exactly like one `curl` per check.
- No proxy from the environment (`trust_env=False`): an `http_proxy` must not capture 127.0.0.1 URLs.

The client is built once per process (building one loads the CA bundle: ~40 ms) and shared by threads.
"""

from __future__ import annotations

import json as jsonlib
import threading
from typing import Any

USER_AGENT = "swiftdeploy"
_client: Any = None
_client_lock = threading.Lock()


class NoAnswer(OSError):
    """No HTTP answer at all: refused, timed out, reset, or not HTTP. `str()` names the reason, e.g.
    `ConnectError: [Errno 111] Connection refused`."""


def _shared_client() -> Any:
    global _client
    with _client_lock:
        if _client is None:
            import httpx

            _client = httpx.Client(
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return _client


def request(method: str, url: str, *, json: Any = None, timeout: float = 5.0, limit: int = 65536) -> tuple[int, bytes]:
    """(HTTP status, the first `limit` bytes of the body) of one request; `json` is sent as a JSON body.
    Raises NoAnswer when nothing answered in HTTP."""
    import httpx

    content = jsonlib.dumps(json).encode() if json is not None else None
    headers = {"Content-Type": "application/json"} if content is not None else None
    try:
        with _shared_client().stream(method, url, content=content, headers=headers, timeout=timeout) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= limit:
                    break
            return response.status_code, bytes(body[:limit])
    except httpx.HTTPError as exc:
        raise NoAnswer(f"{type(exc).__name__}: {exc or 'no answer'}") from None


def get_text(url: str, *, timeout: float = 2.0, limit: int = 4096) -> tuple[int, str]:
    """(status, body as text) of a GET. Raises NoAnswer when nothing answered in HTTP."""
    status, body = request("GET", url, timeout=timeout, limit=limit)
    return status, body.decode("utf-8", "replace")
