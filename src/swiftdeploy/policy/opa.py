"""The OPA server engine, over its REST data API (https://www.openpolicyagent.org/docs/rest-api).

Fail closed: every way OPA can fail to answer raises PolicyEngineUnavailable (exit 4) with its own message;
nothing here returns allow unless OPA returned a well-formed allow decision.

A fault in the Rego itself (conflicting rule values, a builtin that fails on the input) is not the engine being
unavailable: it is a PolicyError (exit 2), exactly as the embedded engine reports it, so the same policy fails the
same way on both engines. Queries run with `strict-builtin-errors`, so a failing builtin is reported the way
regorus reports it instead of silently making the decision undefined.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import PolicyEngineUnavailable, PolicyError
from .decision import Decision, InvalidDecision, parse_decision
from .embedded import to_json

SNIPPET = 200
FAULTS_SHOWN = 5


def opa_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


class OpaEngine:
    name = "opa"

    def __init__(self, url: str, *, timeout: float = 2.0, transport: Any = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> None:
        """GET /health once; raises PolicyEngineUnavailable unless OPA answers 200."""
        response = self._send("GET", "/health", what="the health check")
        if response.status_code != 200:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} is not healthy: GET /health answered HTTP {response.status_code}: "
                f"{_snippet(response.text)}",
                hint="check the opa service's logs (docker compose logs opa); the bundle may have failed to load",
            )

    def wait_healthy(self, timeout: float, *, interval: float = 0.25, sleep=time.sleep) -> None:
        """Poll /health until it answers 200 or `timeout` seconds pass (then re-raise the last failure)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except PolicyEngineUnavailable:
                if time.monotonic() >= deadline:
                    raise
                sleep(interval)

    def evaluate(self, domain: str, input: Any) -> Decision:
        path = f"/v1/data/swiftdeploy/{domain}/decision"
        rule = f"data.swiftdeploy.{domain}.decision"
        body = to_json({"input": input}, "the policy input")
        response = self._send(
            "POST",
            path,
            what=f"POST {path}",
            content=body,
            headers={"Content-Type": "application/json"},
            params={"strict-builtin-errors": "true"},
        )
        if response.status_code != 200:
            fault = rego_fault(response)
            if fault is not None:
                raise PolicyError(
                    f"evaluating {rule} with the policies OPA at {self.url} serves failed:\n{fault}",
                    hint="fix the policy",
                )
            raise PolicyEngineUnavailable(
                f"OPA answered HTTP {response.status_code} to POST {path}: {_snippet(response.text)}",
                hint="check the opa service's logs; a policy runtime error or a bad input makes OPA answer 4xx/5xx",
            )
        try:
            answer = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} answered POST {path} with a body that is not JSON: {_snippet(response.text)}",
                hint="is something other than OPA listening on opa.port?",
            ) from None
        if not isinstance(answer, dict) or "result" not in answer:
            raise PolicyEngineUnavailable(
                f"OPA returned no result for {rule}: the policy package/rule path is wrong or the bundle is not loaded",
                hint="check the opa service mounts policy-bundle (run `swiftdeploy init` to write it)",
            )
        try:
            return parse_decision(answer["result"], domain=domain, engine="opa", input=input)
        except InvalidDecision as exc:
            raise PolicyEngineUnavailable(
                f"OPA's result for {rule} is not a valid decision: {exc}",
                hint="the policies OPA serves differ from swiftdeploy's; run `swiftdeploy init` and restart opa",
            ) from exc

    def _send(self, method: str, path: str, *, what: str, **kwargs: Any):
        import httpx

        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} did not answer {what} within {self.timeout:g} s ({type(exc).__name__})",
                hint="OPA is overloaded or stuck; check it, or raise opa.timeout in the manifest",
            ) from exc
        except httpx.ConnectError as exc:
            raise PolicyEngineUnavailable(
                f"cannot connect to OPA at {self.url} for {what}: {exc or 'connection refused'}",
                hint="start it (`swiftdeploy deploy` runs the opa service) or set policy.engine: embedded",
            ) from exc
        except httpx.HTTPError as exc:
            raise PolicyEngineUnavailable(
                f"request to OPA at {self.url} for {what} failed: {type(exc).__name__}: {exc}",
                hint="check that OPA is running and reachable on 127.0.0.1",
            ) from exc


def rego_fault(response: Any) -> str | None:
    """The Rego evaluation errors (`eval_*` codes: conflicts, builtin and type errors) of an OPA error answer, one
    `file:row:col: code: message` line each; None when the answer is not about the policy's own evaluation."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return None
    lines = []
    for error in errors:
        if not isinstance(error, dict) or not str(error.get("code", "")).startswith("eval_"):
            continue
        where = error.get("location") if isinstance(error.get("location"), dict) else {}
        place = ":".join(str(where[k]) for k in ("file", "row", "col") if where.get(k) not in (None, ""))
        lines.append(f"{place + ': ' if place else ''}{error['code']}: {_snippet(str(error.get('message', '')))}")
    if not lines:
        return None
    more = len(lines) - FAULTS_SHOWN
    return "\n".join(lines[:FAULTS_SHOWN] + ([f"... and {more} more"] if more > 0 else []))


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return (text[:SNIPPET] + "...") if len(text) > SNIPPET else (text or "(empty body)")
