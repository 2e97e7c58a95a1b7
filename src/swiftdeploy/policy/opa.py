"""The OPA server engine, over its REST data API (https://www.openpolicyagent.org/docs/rest-api).

Fail closed: every way OPA can fail to answer raises PolicyEngineUnavailable (exit 4) with its own message;
nothing here returns allow unless OPA returned a well-formed allow decision. Each request goes through
swiftdeploy.localhttp.fetch and is bounded as a whole: `timeout` seconds from connecting to the last byte read (a
frozen or trickling OPA cannot stretch it read by read), at most MAX_BODY bytes, no content encoding (asked for
identity; a compressed answer is refused), a decision answer must be application/json, and its JSON is parsed with
swiftdeploy.safejson (bounded nesting, finite numbers).

Decisions are asked with `?provenance=true`: OPA names the revision of the bundle that decided, and with
`expect_revision` (the revision of the bundle the manifest generates, policy/bundle.py) any other revision - a stale
bundle, someone else's OPA - is refused.

A fault in the Rego itself (conflicting rule values, a builtin that fails on the input) is not the engine being
unavailable: it is a PolicyError (exit 2), exactly as the embedded engine reports it, so the same policy fails the
same way on both engines. Queries run with `strict-builtin-errors`, so a failing builtin is reported the way
regorus reports it instead of silently making the decision undefined.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .. import safejson
from ..errors import PolicyEngineUnavailable, PolicyError
from .decision import Decision, InvalidDecision, parse_decision
from .embedded import to_json

if TYPE_CHECKING:
    from ..localhttp import Answer

SNIPPET = 200
FAULTS_SHOWN = 5
MAX_BODY = 1 << 20  # a decision is a few KB; anything near this is not swiftdeploy's OPA


def opa_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


class OpaEngine:
    name = "opa"

    def __init__(
        self, url: str, *, timeout: float = 2.0, transport: Any = None, expect_revision: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.expect_revision = expect_revision
        self.transport = transport  # an httpx transport, for tests; None: localhttp's shared client

    def close(self) -> None:
        """Nothing to release (localhttp keeps no connection open); kept for the engines' common protocol."""

    def __enter__(self) -> OpaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> None:
        """GET /health once; raises PolicyEngineUnavailable unless OPA answers 200."""
        answer = self._send("GET", "/health", what="the health check")
        status, text = answer.status, answer.text()
        if status != 200:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} is not healthy: GET /health answered HTTP {status}: {_snippet(text)}",
                hint="check the opa service's logs (docker compose logs opa, or .swiftdeploy/logs/opa.log); "
                "the bundle may have failed to load",
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
        answer = self._send(
            "POST",
            path,
            what=f"POST {path}",
            params={"provenance": "true", "strict-builtin-errors": "true"},
            content=to_json({"input": input}, "the policy input"),
            headers={"Content-Type": "application/json"},
        )
        status, text = answer.status, answer.text()
        if status != 200:
            fault = rego_fault(text)
            if fault is not None:
                raise PolicyError(
                    f"evaluating {rule} with the policies OPA at {self.url} serves failed:\n{fault}",
                    hint="fix the policy",
                )
        if status == 401:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} refused POST {path} (HTTP 401: its authorization policy does not allow it): "
                f"{_snippet(text)}",
                hint="this OPA does not run the bundle swiftdeploy generates (policy-bundle/system/authz.rego); "
                "run `swiftdeploy deploy` to start the stack's own OPA",
            )
        if status != 200:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} answered HTTP {status} to POST {path}: {_snippet(text)}",
                hint="check the opa service's logs; a policy runtime error or a bad input makes OPA answer 4xx/5xx",
            )
        if answer.content_type != "application/json":
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} answered POST {path} with a body that is not JSON (content type "
                f"{answer.content_type or 'none'}): {_snippet(text)}",
                hint="is something other than OPA listening on opa.port?",
            )
        try:
            body = safejson.loads(text)
        except ValueError as exc:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} answered POST {path} with a body that is not JSON ({exc}): {_snippet(text)}",
                hint="is something other than OPA listening on opa.port?",
            ) from None
        if not isinstance(body, dict) or "result" not in body:
            raise PolicyEngineUnavailable(
                f"OPA returned no result for {rule}: the policy package/rule path is wrong or the bundle is not loaded",
                hint="check the opa service mounts policy-bundle (run `swiftdeploy init` to write it)",
            )
        self._check_revision(body.get("provenance"))
        try:
            return parse_decision(body["result"], domain=domain, engine="opa", input=input)
        except InvalidDecision as exc:
            raise PolicyEngineUnavailable(
                f"OPA's result for {rule} is not a valid decision: {exc}",
                hint="the policies OPA serves differ from swiftdeploy's; run `swiftdeploy init` and restart opa",
            ) from exc

    def _check_revision(self, provenance: Any) -> None:
        if self.expect_revision is None:
            return
        bundles = provenance.get("bundles") if isinstance(provenance, dict) else None
        revisions = sorted(
            str(b.get("revision")) for b in (bundles or {}).values() if isinstance(b, dict) and "revision" in b
        )
        if revisions != [self.expect_revision]:
            served = ", ".join(revisions) or "no bundle revision"
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} decided with bundle revision {served}, but the manifest's policy-bundle/ is "
                f"revision {self.expect_revision}",
                hint="the policies or thresholds changed since OPA loaded them: run `swiftdeploy deploy` "
                "(it reloads OPA) before asking again",
            )

    def _send(self, method: str, path: str, *, what: str, **kwargs: Any) -> Answer:
        """One request through localhttp.fetch: one deadline (`timeout`) for the whole request, at most MAX_BODY
        bytes, no content encoding."""
        from ..localhttp import NoAnswer, TimedOut, Unacceptable, Unreachable, fetch

        try:
            answer = fetch(
                method,
                self.url + path,
                timeout=self.timeout,
                limit=MAX_BODY,
                truncate=False,
                transport=self.transport,
                **kwargs,
            )
        except TimedOut:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} did not answer {what} within {self.timeout:g} s (opa.timeout, the whole request)",
                hint="OPA is overloaded or stuck; check it, or raise opa.timeout in the manifest",
            ) from None
        except Unacceptable as exc:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} answered {what} with an answer swiftdeploy refuses: {exc}",
                hint="is something other than OPA listening on opa.port?",
            ) from None
        except Unreachable as exc:
            raise PolicyEngineUnavailable(
                f"OPA at {self.url} is unreachable for {what}: {exc}",
                hint="start it (`swiftdeploy deploy` runs the stack's OPA service) or set policy.engine: embedded",
            ) from None
        except NoAnswer as exc:
            raise PolicyEngineUnavailable(
                f"request to OPA at {self.url} for {what} failed: {exc}",
                hint="check that OPA is running and reachable on 127.0.0.1",
            ) from None
        return answer


def rego_fault(text: str) -> str | None:
    """The Rego evaluation errors (`eval_*` codes: conflicts, builtin and type errors) of an OPA error answer's
    body, one `file:row:col: code: message` line each; None when the answer is not about the policy's evaluation."""
    try:
        body = safejson.loads(text)
    except ValueError:
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
    """The start of an answer for an error line: whitespace runs as one space, control characters as "?"."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text[: SNIPPET * 4].split()))
    return (text[:SNIPPET] + "...") if len(text) > SNIPPET else (text or "(empty body)")
