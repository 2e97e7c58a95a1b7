"""chaos (through the admin listener) and traffic (to the manifest's own public port on 127.0.0.1).

Neither takes the deploy lock: they change no configuration, and `traffic` must run while `promote stable` holds
the lock and watches its window.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, OperationFailed
from .base import http_json

if TYPE_CHECKING:
    from ..manifest import Manifest

MAX_RPS = 200
TRAFFIC_BODY_MAX = 65536  # bytes of each answer read (the rest dropped unread)
MAX_DURATION = 300.0
MAX_SLOW_SECONDS = 30.0


@dataclass
class ChaosResult:
    track: str
    mode: str
    state: dict[str, Any]  # the app's answer (the first replica's when the track has several: all got the same)
    replicas: int = 1  # how many apps were told: every replica of the track (swarm)

    def to_dict(self) -> dict[str, Any]:
        return {"track": self.track, "mode": self.mode, "state": self.state, "replicas": self.replicas}


def chaos(m: Manifest, track: str, mode: str, duration: float | None = None, rate: float | None = None) -> ChaosResult:
    """Inject `slow` (each request sleeps `duration` s), `error` (a `rate` fraction answers 500) or `recover`."""
    from ..history import append
    from ..metrics.scrape import track_urls

    if track not in ("stable", "canary"):
        raise InvalidInput(f"track must be stable or canary, not {track!r}")
    body: dict[str, Any] = {"mode": mode}
    fields: dict[str, Any] = {}
    if mode == "slow":
        if duration is None or not 0 < duration <= MAX_SLOW_SECONDS:
            raise InvalidInput(f"chaos slow needs --duration between 0 and {MAX_SLOW_SECONDS:g} seconds")
        body["duration"] = fields["duration"] = float(duration)
    elif mode == "error":
        if rate is None or not 0 < rate <= 1:
            raise InvalidInput("chaos error needs --rate between 0 (exclusive) and 1, e.g. 0.5 for half the requests")
        body["rate"] = fields["rate"] = float(rate)
    elif mode != "recover":
        raise InvalidInput(f"unknown chaos mode {mode!r}", hint="use slow, error or recover")
    answers = [_inject(m, track, url, body) for url in track_urls(m, track, "chaos").values()]
    if len(answers) > 1:  # a track of replicas (swarm): every one of them was told
        fields["replicas"] = len(answers)
    append(m.history_path, "chaos", rotation=m.history.rotation, track=track, mode=mode, runtime=m.runtime, **fields)
    return ChaosResult(track=track, mode=mode, state=answers[0], replicas=len(answers))


def _inject(m: Manifest, track: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the chaos request to one app (a track, or one replica of it) through the admin listener."""
    status, answer = http_json(url, method="POST", body=body, timeout=10.0)
    detail = answer.get("detail") or answer.get("error") if isinstance(answer, dict) else str(answer)[:200]
    if status == 503 and track == "canary":
        raise OperationFailed("no canary track is running", hint="start one with `swiftdeploy promote canary`")
    if status in (403, 422):
        raise InvalidInput(f"the {track} app refused the chaos request: {detail}")
    if status in (502, 504):
        raise OperationFailed(
            f"the {track} app does not answer through the admin listener (HTTP {status})",
            hint="check `swiftdeploy status`; the app may have stopped",
        )
    if status != 200 or not isinstance(answer, dict):
        raise OperationFailed(f"POST {url} answered HTTP {status}: {detail}")
    return answer


@dataclass
class TrafficResult:
    url: str
    rps: float
    duration: float
    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_mode: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # requests without an HTTP answer, by reason
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    seconds: float = 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "rps": self.rps,
            "duration": self.duration,
            "sent": self.sent,
            "answered": sum(self.by_status.values()),
            "by_status": dict(sorted(self.by_status.items())),
            "by_mode": dict(sorted(self.by_mode.items())),
            "errors": dict(self.errors),
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "seconds": round(self.seconds, 3),
        }


def traffic(
    m: Manifest,
    rps: float,
    duration: float,
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    stop: threading.Event | None = None,
    timeout: float = 10.0,
) -> TrafficResult:
    """Send GET `path` to http://127.0.0.1:<nginx.port> at `rps` for `duration` s (open loop, bounded: each
    request through localhttp.fetch, `timeout` for the whole of it, at most TRAFFIC_BODY_MAX bytes read)."""
    from ..localhttp import NoAnswer, TimedOut, Unacceptable, fetch, pooled_client

    if not 0 < rps <= MAX_RPS:
        raise InvalidInput(f"--rps must be between 0 and {MAX_RPS}, got {rps:g}")
    if not 0 < duration <= MAX_DURATION:
        raise InvalidInput(f"--duration must be between 0 and {MAX_DURATION:g} seconds, got {duration:g}")
    if not path.startswith("/") or "://" in path or any(c in path for c in " \r\n"):
        raise InvalidInput(f"--path must be a path on the public listener such as /, got {path!r}")
    url = f"http://127.0.0.1:{m.nginx.port}{path}"
    result = TrafficResult(url=url, rps=rps, duration=duration)
    total = max(1, int(rps * duration))
    lock = threading.Lock()
    workers = int(min(64, max(4, rps)))

    def one(client: Any) -> None:
        started = time.perf_counter()
        try:
            answer = fetch("GET", url, headers=headers, timeout=timeout, limit=TRAFFIC_BODY_MAX, client=client)
        except TimedOut:
            with lock:
                result.errors["timeout"] += 1
            return
        except NoAnswer as exc:
            with lock:
                # the exception's name (`ConnectError`, `RemoteProtocolError`), or why an answer was refused
                result.errors["refused answer" if isinstance(exc, Unacceptable) else str(exc).split(":")[0]] += 1
            return
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            result.by_status[str(answer.status)] += 1
            result.by_mode[answer.headers.get("x-mode", "-")] += 1
            result.latencies_ms.append(elapsed)

    began = time.monotonic()
    with pooled_client(workers) as client, ThreadPoolExecutor(workers) as pool:
        for i in range(total):
            if stop is not None and stop.is_set():
                break
            delay = began + i / rps - time.monotonic()
            if delay > 0:
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    time.sleep(delay)
            pool.submit(one, client)
            result.sent += 1
    result.seconds = time.monotonic() - began
    if result.sent and not result.by_status and result.errors:
        reasons = ", ".join(f"{k} x{v}" for k, v in result.errors.items())
        raise OperationFailed(
            f"no request to {url} got an answer ({reasons})", hint="is the stack deployed? see `swiftdeploy status`"
        )
    return result
