"""The FastAPI application: GET /, /healthz, /metrics, GET+POST /chaos."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo_api import __version__ as package_version
from demo_api.chaos import MAX_SLOW_SECONDS, ChaosMiddleware, ChaosState
from demo_api.config import Settings
from demo_api.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware

log = logging.getLogger("demo_api")

CHAOS_USAGE = (
    'expected {"mode": "slow", "duration": N} with 0 < N <= 30, {"mode": "error", "rate": R} with 0 < R <= 1, '
    'or {"mode": "recover"}'
)


class _ChaosBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlowChaos(_ChaosBody):
    mode: Literal["slow"]
    duration: float = Field(gt=0, le=MAX_SLOW_SECONDS, allow_inf_nan=False, description="seconds per request")


class ErrorChaos(_ChaosBody):
    mode: Literal["error"]
    rate: float = Field(gt=0, le=1, allow_inf_nan=False, description="fraction of requests answered 500")


class RecoverChaos(_ChaosBody):
    mode: Literal["recover"]


ChaosRequest = Annotated[SlowChaos | ErrorChaos | RecoverChaos, Field(discriminator="mode")]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _readable(errors: list[Any]) -> str:
    """One line a person can act on, from pydantic's error list."""
    parts = []
    for err in errors:
        # loc is ("body", <tag>, <field>) for a tagged union; the tag repeats the body's own "mode".
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if len(loc) > 1 and loc[0] in ("slow", "error", "recover"):
            loc = loc[1:]
        # A missing or unknown tag is reported at the body level; it is really about "mode".
        where = ".".join(loc) or ("mode" if str(err.get("type", "")).startswith("union_tag") else "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class ResponseHeadersMiddleware:
    """Adds X-Mode and X-App-Version to every response, and turns an unhandled error into a JSON 500.

    It is the outermost middleware, so chaos 500s, 404/405/422 and crashes all carry the headers.
    """

    def __init__(self, app: ASGIApp, *, mode: str, version: str) -> None:
        self.app = app
        self.headers = [(b"x-mode", mode.encode()), (b"x-app-version", version.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), *self.headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise  # too late for a clean answer: let the server close the connection and log it
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            body = json.dumps({"error": "internal server error", "path": scope["path"]}).encode()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None, instrument: bool = True) -> FastAPI:
    """Build an app with its own chaos state and (when instrumented) its own Prometheus registry."""
    settings = settings or Settings()
    started = time.monotonic()

    def uptime() -> float:
        return time.monotonic() - started

    chaos = ChaosState()
    app = FastAPI(title="swiftdeploy demo API", version=package_version)
    app.state.settings = settings
    app.state.chaos = chaos
    app.state.metrics = None

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        detail = f"invalid {request.method} {request.url.path} body: {_readable(exc.errors())}"
        if request.url.path == "/chaos":
            detail += f" ({CHAOS_USAGE})"
        return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {
            "message": f"Welcome to the swiftdeploy demo API ({settings.mode} track)",
            "mode": settings.mode,
            "version": settings.version,
            "timestamp": _utc_now(),
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "mode": settings.mode,
            "version": settings.version,
            "uptime_seconds": round(uptime(), 3),
        }

    @app.get("/chaos")
    async def chaos_state() -> dict[str, Any]:
        return chaos.current.as_dict()

    @app.post("/chaos")
    async def set_chaos(payload: Annotated[ChaosRequest, Body()]) -> Any:
        if isinstance(payload, RecoverChaos):
            return chaos.recover().as_dict()  # always allowed, so recovering never fails
        if settings.mode != "canary":
            return JSONResponse(
                status_code=403,
                content={
                    "detail": f"chaos mode {payload.mode!r} is refused on the stable track (MODE=stable); "
                    'inject faults into a canary (MODE=canary). Only {"mode": "recover"} is allowed here.',
                    "mode": settings.mode,
                },
            )
        snapshot = chaos.slow(payload.duration) if isinstance(payload, SlowChaos) else chaos.error(payload.rate)
        log.warning("chaos injected: %s", snapshot.as_dict())
        return snapshot.as_dict()

    if instrument:
        metrics = Metrics(mode=settings.mode, chaos=chaos, uptime=uptime)
        app.state.metrics = metrics

        @app.get("/metrics")
        async def metrics_endpoint() -> Response:
            return Response(content=metrics.render(), media_type=CONTENT_TYPE)

    else:

        @app.get("/metrics")
        async def metrics_disabled() -> JSONResponse:
            return JSONResponse(
                status_code=404,
                content={"detail": "metrics are disabled (METRICS_ENABLED=0); start with METRICS_ENABLED=1"},
            )

    # add_middleware wraps: the last added runs first. Order, outside in: headers, metrics, chaos, routes.
    app.add_middleware(ChaosMiddleware, state=chaos)
    if instrument:
        app.add_middleware(MetricsMiddleware, metrics=metrics, router=app.router)
    app.add_middleware(ResponseHeadersMiddleware, mode=settings.mode, version=settings.version)
    return app
