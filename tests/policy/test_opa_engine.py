"""The OPA REST engine against httpx.MockTransport, for the answers a real OPA does not give (an HTML error page, a
result that is not a decision, a body of megabytes, ...) and for engine selection without a server. What a real OPA
can show - killed, frozen, `{}` for a wrong path, a refused bundle, a stale revision, the authorization policy - is
in test_opa_real.py against the real binary."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from swiftdeploy.errors import PolicyEngineUnavailable
from swiftdeploy.policy import evaluate, select_engine
from swiftdeploy.policy.bundle import expected_revision
from swiftdeploy.policy.opa import MAX_BODY, OpaEngine

ALLOW = {"allow": True, "verdict": "allow", "violations": []}
DENY = {
    "allow": False,
    "verdict": "deny",
    "violations": [
        {"rule": "p99_latency", "message": "too slow", "observed": 612.5, "threshold": 500, "unit": "ms"},
    ],
}
INPUT = {"window_seconds": 30, "canary": {"requests": 30}, "stable": None}


def opa(handler: Callable[[httpx.Request], httpx.Response], seen: list | None = None) -> httpx.MockTransport:
    """A fake OPA: /health answers 200, the data API answers `handler`."""

    def route(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path == "/health":
            return httpx.Response(200, json={})
        return handler(request)

    return httpx.MockTransport(route)


def served(result: object, m=None) -> Callable[[httpx.Request], httpx.Response]:
    """OPA's answer with `result`, decided by the bundle `m` generates (its revision in the provenance)."""
    revision = expected_revision(m) if m is not None else "r1"
    body = {"result": result, "provenance": {"version": "1.22.3", "bundles": {"/b": {"revision": revision}}}}
    return lambda request: httpx.Response(200, json=body)


def engine(transport: httpx.MockTransport) -> OpaEngine:
    return OpaEngine("http://127.0.0.1:8181", timeout=1.5, transport=transport)


def test_allow_result_is_an_allow_decision() -> None:
    seen: list[httpx.Request] = []
    d = engine(opa(served(ALLOW), seen)).evaluate("canary", INPUT)
    assert (d.allow, d.verdict, d.engine, d.violations, d.input) == (True, "allow", "opa", [], INPUT)
    [post] = [r for r in seen if r.method == "POST"]
    assert post.url.path == "/v1/data/swiftdeploy/canary/decision"
    # OPA names the bundle revision that decided; a failing builtin is an error, as on regorus
    assert dict(post.url.params) == {"provenance": "true", "strict-builtin-errors": "true"}
    assert json.loads(post.content) == {"input": INPUT}


def test_deny_result_keeps_every_violation() -> None:
    d = engine(opa(served(DENY))).evaluate("canary", INPUT)
    assert (d.allow, d.verdict, d.engine) == (False, "deny", "opa")
    assert [v.to_dict() for v in d.violations] == DENY["violations"]


def failure(handler: Callable[[httpx.Request], httpx.Response]) -> str:
    with pytest.raises(PolicyEngineUnavailable) as info:
        engine(opa(handler)).evaluate("canary", INPUT)
    assert info.value.exit_code == 4
    return str(info.value)


def raise_(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_every_failure_fails_closed_with_its_own_message() -> None:
    messages = {
        "500": failure(lambda r: httpx.Response(500, json={"code": "internal_error", "message": "boom"})),
        "non-json": failure(lambda r: httpx.Response(200, text="<html>proxy error</html>")),
        "broken": failure(raise_(httpx.RemoteProtocolError("peer closed connection"))),
        "bad shape": failure(lambda r: httpx.Response(200, json={"result": {"allow": True}})),
        "inconsistent": failure(lambda r: httpx.Response(200, json={"result": {**ALLOW, "verdict": "deny"}})),
        "result true": failure(lambda r: httpx.Response(200, json={"result": True})),
        "foreign 401": failure(lambda r: httpx.Response(401, json={"code": "unauthorized", "message": "no"})),
        "huge": failure(lambda r: httpx.Response(200, content=b" " * (MAX_BODY + 1))),
    }
    assert "HTTP 500" in messages["500"] and "boom" in messages["500"]
    assert "not JSON" in messages["non-json"] and "proxy error" in messages["non-json"]
    assert "RemoteProtocolError" in messages["broken"]
    assert "not a valid decision" in messages["bad shape"] and "verdict" in messages["bad shape"]
    assert "allow is true but verdict is 'deny'" in messages["inconsistent"]
    assert "HTTP 401" in messages["foreign 401"] and "authorization policy" in messages["foreign 401"]
    assert f"more than {MAX_BODY} bytes" in messages["huge"]
    # each failure is told apart: no two messages are the same
    assert len(set(messages.values())) == len(messages)


def test_a_decision_from_another_bundle_revision_is_refused() -> None:
    def engine_expecting(revision: str) -> OpaEngine:
        return OpaEngine("http://127.0.0.1:8181", timeout=1.5, transport=opa(served(ALLOW)), expect_revision=revision)

    assert engine_expecting("r1").evaluate("canary", INPUT).allow
    with pytest.raises(
        PolicyEngineUnavailable, match="bundle revision r1, but the manifest's policy-bundle/ is revision r2"
    ):
        engine_expecting("r2").evaluate("canary", INPUT)
    no_provenance = OpaEngine(
        "http://127.0.0.1:8181",
        timeout=1.5,
        transport=opa(lambda r: httpx.Response(200, json={"result": ALLOW})),
        expect_revision="r1",
    )
    with pytest.raises(PolicyEngineUnavailable, match="no bundle revision"):
        no_provenance.evaluate("canary", INPUT)


def test_a_deny_without_reasons_is_not_a_decision() -> None:
    silent = {"allow": False, "verdict": "deny", "violations": []}
    assert "without any violation" in failure(lambda r: httpx.Response(200, json={"result": silent}))


def test_health_failures_are_unavailable() -> None:
    refused = httpx.MockTransport(raise_(httpx.ConnectError("refused")))
    with pytest.raises(PolicyEngineUnavailable, match="OPA at http://127.0.0.1:8181 is unreachable"):
        engine(refused).health()
    unhealthy = httpx.MockTransport(lambda r: httpx.Response(500, text="bundle not activated"))
    with pytest.raises(PolicyEngineUnavailable, match="not healthy.*HTTP 500.*bundle not activated"):
        engine(unhealthy).health()


def test_wait_healthy_polls_until_ok() -> None:
    answers = iter([httpx.ConnectError("refused"), httpx.ConnectError("refused")])

    def handler(request: httpx.Request) -> httpx.Response:
        error = next(answers, None)
        if error is not None:
            raise error
        return httpx.Response(200, json={})

    naps: list[float] = []
    engine(httpx.MockTransport(handler)).wait_healthy(30, interval=0.01, sleep=naps.append)
    assert len(naps) == 2


# --- engine selection (policy.engine) ---


def test_opa_engine_used_when_configured(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: opa\nopa: {port: 18181, timeout: 1}\n", engine=None, runtime="local")
    seen: list[httpx.Request] = []
    d = evaluate(m, "canary", INPUT, transport=opa(served(DENY, m), seen))
    assert d.engine == "opa" and d.verdict == "deny"
    assert {str(r.url) for r in seen} == {
        "http://127.0.0.1:18181/health",
        "http://127.0.0.1:18181/v1/data/swiftdeploy/canary/decision?provenance=true&strict-builtin-errors=true",
    }


def test_opa_engine_unreachable_is_exit_4_never_embedded(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: opa\n", engine=None)
    with pytest.raises(PolicyEngineUnavailable) as info:
        evaluate(m, "infrastructure", {}, transport=httpx.MockTransport(raise_(httpx.ConnectError("refused"))))
    assert info.value.exit_code == 4


def test_auto_uses_opa_with_docker_runtime_when_healthy(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: auto\n", engine=None, runtime="docker")
    d = evaluate(m, "canary", INPUT, transport=opa(served(ALLOW, m)))
    assert d.engine == "opa" and d.allow


def test_auto_falls_back_to_embedded_when_opa_is_down(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: auto\n", engine=None, runtime="docker")
    d = evaluate(m, "canary", INPUT, transport=httpx.MockTransport(raise_(httpx.ConnectError("refused"))))
    assert d.engine == "embedded"
    assert d.verdict == "deny"  # the real policy: INPUT's canary track misses fields


def test_auto_with_local_runtime_and_no_opa_binary_never_asks_opa(write_manifest, monkeypatch, tmp_path) -> None:
    import swiftdeploy.policy.server as server

    monkeypatch.setenv("PATH", str(tmp_path))  # no `opa` on PATH
    monkeypatch.setattr(server, "TOOLS_OPA", tmp_path / "nothing" / "opa")
    m = write_manifest("policy:\n  engine: auto\n", engine=None, runtime="local")
    seen: list[httpx.Request] = []
    assert select_engine(m, transport=opa(served(ALLOW, m), seen)).name == "embedded"
    assert seen == []


def test_auto_with_local_runtime_asks_the_opa_it_runs(write_manifest) -> None:
    """An OPA binary is found (here opa.binary): the local runtime runs OPA as a service, so auto asks it."""
    m = write_manifest("policy:\n  engine: auto\nopa: {binary: /bin/true}\n", engine=None, runtime="local")
    seen: list[httpx.Request] = []
    assert select_engine(m, transport=opa(served(ALLOW, m), seen)).name == "opa"
    assert [r.url.path for r in seen] == ["/health"]


def test_a_set_opa_binary_that_is_not_executable_is_invalid_input(write_manifest) -> None:
    from swiftdeploy.errors import InvalidInput

    m = write_manifest("policy:\n  engine: auto\nopa: {binary: bin/opa}\n", engine=None, runtime="local")
    with pytest.raises(InvalidInput, match="opa.binary 'bin/opa' is not an executable file") as info:
        select_engine(m)
    assert info.value.exit_code == 2


def test_auto_does_not_fall_back_once_opa_answered_health(write_manifest) -> None:
    """A healthy OPA serving the wrong path must surface, not be papered over by the embedded engine."""
    m = write_manifest("policy:\n  engine: auto\n", engine=None, runtime="docker")
    with pytest.raises(PolicyEngineUnavailable, match="no result"):
        evaluate(m, "canary", INPUT, transport=opa(lambda r: httpx.Response(200, json={})))
