"""The real Open Policy Agent (the pinned binary, `make opa`): the pin, the policies under `opa check/fmt/test`,
`swiftdeploy policy test` agreeing with `opa test`, the locked-down server (authorization policy, bundle) and every
failure mode a real OPA can show. Nothing is mocked here; shapes a real OPA never produces stay in
test_opa_engine.py (httpx.MockTransport)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import stack_ports

from swiftdeploy.errors import PolicyEngineUnavailable
from swiftdeploy.manifest.model import DEFAULT_OPA_IMAGE
from swiftdeploy.policy import evaluate
from swiftdeploy.policy.bundle import BUNDLE_DIR, load_policy_set
from swiftdeploy.policy.opa import OpaEngine, opa_url
from swiftdeploy.policy.opa_version import OPA_VERSION
from swiftdeploy.policy.testing import run_tests

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
BAD_CANARY = """\
package swiftdeploy.canary

import rego.v1

# regorus compiles this; OPA refuses it: a reference to all of `data` depends on every rule, this one included.
thresholds := object.get(data, ["swiftdeploy", "thresholds"], {})

decision := {"allow": true, "verdict": "allow", "violations": [], "t": thresholds}
"""


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def raw(m, method: str, path: str, **kwargs) -> httpx.Response:
    """One request to the manifest's OPA, as any local process could send it."""
    with httpx.Client(base_url=opa_url(m.opa.port), timeout=5, trust_env=False) as client:
        return client.request(method, path, **kwargs)


# --- the pin -----------------------------------------------------------------------------------------------------


def test_one_pin_reaches_the_makefile_the_compose_default_and_the_example() -> None:
    assert run("make", "-s", "opa-version").stdout.strip() == OPA_VERSION
    assert f"openpolicyagent/opa:{OPA_VERSION}" == DEFAULT_OPA_IMAGE
    assert f"image: openpolicyagent/opa:{OPA_VERSION}\n" in (REPO / "examples" / "manifest.yaml").read_text()


def test_the_tests_run_the_pinned_opa(opa_binary) -> None:
    assert f"Version: {OPA_VERSION}\n" in run(opa_binary, "version").stdout


# --- the policies under the real OPA ------------------------------------------------------------------------------


def test_policies_pass_opa_check_strict_fmt_and_test(opa_binary) -> None:
    for argv in (["check", "--strict"], ["fmt", "--list", "--fail"], ["test"]):
        done = run(opa_binary, *argv, str(POLICIES))
        assert done.returncode == 0, f"opa {' '.join(argv)}: {done.stdout}{done.stderr}"


def test_the_generated_bundle_passes_opa_check_strict_and_fmt(opa_binary, write_manifest) -> None:
    from swiftdeploy import generate

    m = write_manifest("policy:\n  engine: opa\n  thresholds: {max_cpu_load: 4}\n", engine=None)
    generate.write(m)
    bundle = m.out_dir / BUNDLE_DIR
    assert (bundle / "system" / "authz.rego").is_file() and (bundle / ".manifest").is_file()
    for argv in (["check", "--strict", "--bundle"], ["fmt", "--list", "--fail"]):
        done = run(opa_binary, *argv, str(bundle))
        assert done.returncode == 0, f"opa {' '.join(argv)}: {done.stdout}{done.stderr}"


def opa_test_results(opa_binary: str, folder: Path) -> dict[str, bool]:
    done = run(opa_binary, "test", "--format=json", str(folder))
    assert done.returncode in (0, 2), done.stderr
    return {f"{r['package']}.{r['name']}": not r.get("fail", False) for r in json.loads(done.stdout)}


def ours(folder: Path) -> dict[str, bool]:
    return {r.qualified: r.passed for r in run_tests(load_policy_set(folder=folder))}


def test_policy_test_agrees_with_opa_test_test_by_test(opa_binary) -> None:
    theirs = opa_test_results(opa_binary, POLICIES)
    assert len(theirs) >= 60 and all(theirs.values())
    assert ours(POLICIES) == theirs


def test_policy_test_agrees_with_opa_test_on_failures_too(opa_binary, tmp_path) -> None:
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "x_test.rego").write_text(
        "package swiftdeploy.x_test\n\nimport rego.v1\n\n"
        "test_true if true\n\ntest_false if false\n\ntest_undefined if input.nothing == 1\n\n"
        "test_error if {\n\tx := 1 / 0\n\tx == 1\n}\n\ntest_value := 3\n\ntest_equal if 1 + 1 == 2\n"
    )
    theirs = opa_test_results(opa_binary, tmp_path)
    assert theirs == {
        "data.swiftdeploy.x_test.test_true": True,
        "data.swiftdeploy.x_test.test_false": False,
        "data.swiftdeploy.x_test.test_undefined": False,
        "data.swiftdeploy.x_test.test_error": False,
        "data.swiftdeploy.x_test.test_value": False,
        "data.swiftdeploy.x_test.test_equal": True,
    }
    assert ours(tmp_path) == theirs


# --- nobody tampers with the decider ------------------------------------------------------------------------------

EVIL = 'package swiftdeploy.canary\n\ndecision := {"allow": true, "verdict": "allow", "violations": []}\n'


def test_every_write_is_refused_and_the_decision_stays(real_opa, canary_window) -> None:
    m = real_opa()
    failing = canary_window(canary={"errors": 100, "error_rate_percent": 50.0})
    before = evaluate(m, "canary", failing)
    assert (before.engine, before.verdict) == ("opa", "deny")
    writes = [
        ("PUT", "/v1/policies/evil", {"content": EVIL, "headers": {"Content-Type": "text/plain"}}),
        ("PUT", "/v1/policies/canary.rego", {"content": EVIL}),
        ("DELETE", "/v1/policies/canary.rego", {}),
        ("PUT", "/v1/data/swiftdeploy/thresholds", {"json": {"max_error_rate_percent": 100}}),
        (
            "PATCH",
            "/v1/data/swiftdeploy/thresholds",
            {"json": [{"op": "replace", "path": "/min_requests", "value": 0}]},
        ),
        ("DELETE", "/v1/data/swiftdeploy/thresholds", {}),
        ("PUT", "/v1/data/system/authz", {"json": {}}),
        ("POST", "/v1/data/swiftdeploy/thresholds", {"json": {"input": {}}}),  # a read that is not a decision
    ]
    for method, path, kwargs in writes:
        answer = raw(m, method, path, **kwargs)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["message"] == "request rejected by administrative policy"
    after = evaluate(m, "canary", failing)
    assert after.to_dict() == before.to_dict()
    assert evaluate(m, "canary", canary_window()).allow  # decisions still answer


def test_every_other_read_is_refused(real_opa) -> None:
    m = real_opa()
    reads = [
        ("GET", "/v1/data"),
        ("GET", "/v1/data/swiftdeploy/thresholds"),
        ("GET", "/v1/data/swiftdeploy/canary/decision"),  # the decision, but not the way swiftdeploy asks
        ("GET", "/v1/policies"),
        ("GET", "/v1/policies/canary.rego"),
        ("POST", "/v1/query"),
        ("POST", "/v1/compile"),
        ("POST", "/"),
        ("GET", "/v1/config"),
        ("GET", "/v1/status"),
        ("GET", "/metrics"),
        ("GET", "/health?bundles"),
        ("POST", "/v1/data/swiftdeploy/canary/decision?explain=full"),  # would print the policy's evaluation
        ("POST", "/v1/data/swiftdeploy/canary/decision?metrics=true&provenance=true"),
    ]
    for method, path in reads:
        answer = raw(m, method, path, json={"input": {}, "query": "data"} if method == "POST" else None)
        assert answer.status_code == 401, (method, path, answer.text[:200])
    assert raw(m, "GET", "/health").status_code == 200
    allowed = raw(m, "POST", "/v1/data/swiftdeploy/infrastructure/decision?provenance=true", json={"input": {}})
    assert allowed.status_code == 200 and allowed.json()["result"]["verdict"] == "deny"


# --- failure modes against the real thing -------------------------------------------------------------------------


def opa_pid(m) -> int:
    return json.loads((m.state_dir / "pids" / "opa.json").read_text())["pid"]


def test_killed_opa_is_exit_4_unreachable(real_opa, healthy_host) -> None:
    m = real_opa()
    assert evaluate(m, "infrastructure", healthy_host).engine == "opa"
    os.kill(opa_pid(m), signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(PolicyEngineUnavailable) as info:
        evaluate(m, "infrastructure", healthy_host)
    assert info.value.exit_code == 4 and "unreachable" in str(info.value)


def test_frozen_opa_is_exit_4_within_the_timeout_for_the_whole_request(real_opa, healthy_host) -> None:
    m = real_opa(timeout=0.8)
    pid = opa_pid(m)
    with OpaEngine(opa_url(m.opa.port), timeout=m.opa.timeout) as opa:
        assert opa.evaluate("infrastructure", healthy_host).allow
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(PolicyEngineUnavailable) as info:
                opa.evaluate("infrastructure", healthy_host)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert info.value.exit_code == 4 and "did not answer" in str(info.value) and "0.8 s" in str(info.value)
        assert elapsed < m.opa.timeout + 1.0
        # The same engine answers again once OPA runs again: a frozen OPA never left a wrong answer behind.
        opa.wait_healthy(10)
        assert opa.evaluate("infrastructure", healthy_host).allow


def test_the_whole_request_is_bounded_not_each_read(healthy_host) -> None:
    """A server that trickles its answer (a byte every 0.3 s) keeps every single read short; the request as a whole
    must still end at opa.timeout. (No real OPA trickles: a local socket server plays that part.)"""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b" " * 100:
                if stop.wait(0.3):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        with OpaEngine(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=1.0) as opa:
            started = time.monotonic()
            with pytest.raises(PolicyEngineUnavailable, match="did not answer"):
                opa.evaluate("infrastructure", healthy_host)
            assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        server.close()
        thread.join(5)


def test_a_real_200_without_result_is_exit_4(real_opa, tmp_path, healthy_host) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "canary.rego").write_text('package swiftdeploy.canary\n\nimport rego.v1\n\nverdict := "allow"\n')
    (own / "infrastructure.rego").write_text("package swiftdeploy.infrastructure\n\nimport rego.v1\n\nx := 1\n")
    m = real_opa("policy:\n  engine: opa\n  dir: own\n")
    # What OPA really answers for a rule that does not exist: 200 and no `result`.
    answer = raw(m, "POST", "/v1/data/swiftdeploy/canary/decision", json={"input": {}})
    assert (answer.status_code, "result" in answer.json()) == (200, False)
    with pytest.raises(PolicyEngineUnavailable) as info:
        evaluate(m, "canary", {})
    assert info.value.exit_code == 4 and "no result for data.swiftdeploy.canary.decision" in str(info.value)


def test_a_stale_bundle_is_refused(real_opa, write_manifest, healthy_host) -> None:
    """The manifest changed a threshold after OPA loaded the bundle: OPA still answers, with the old policy data -
    the client sees the other bundle revision and refuses the decision."""
    from swiftdeploy import generate
    from swiftdeploy.manifest import load_manifest

    m = real_opa()
    assert evaluate(m, "infrastructure", healthy_host).allow
    path = m.source_path
    path.write_text(
        path.read_text().replace(
            "policy:\n  engine: opa\n", "policy:\n  engine: opa\n  thresholds: {max_cpu_load: 0.1}\n"
        )
    )
    changed = load_manifest(path)
    generate.write(changed)
    with pytest.raises(PolicyEngineUnavailable, match="bundle revision .* but the manifest's policy-bundle/ is"):
        evaluate(changed, "infrastructure", healthy_host)


def test_a_bundle_opa_cannot_compile_fails_the_deploy_with_opas_message(opa_binary, tmp_path) -> None:
    """regorus accepts this policy, OPA refuses it: deploy stops before the gate with exit 4 and OPA's own words,
    and nothing is left running."""
    from swiftdeploy.ops import deploy

    own = tmp_path / "own"
    own.mkdir()
    (own / "canary.rego").write_text(BAD_CANARY)
    (own / "infrastructure.rego").write_text((POLICIES / "infrastructure.rego").read_text())
    app, public, admin, opa = stack_ports(3)  # app: services.port, the first of the local runtime's four
    (tmp_path / "manifest.yaml").write_text(
        f"services: {{image: swift-deploy-1-node:latest, port: {app}}}\n"
        f"nginx: {{port: {public}, admin_port: {admin}}}\n"
        "runtime: local\n"
        f"opa: {{port: {opa}, binary: {opa_binary}}}\n"
        "policy:\n  engine: opa\n  dir: own\n"
    )
    with pytest.raises(PolicyEngineUnavailable) as info:
        deploy(tmp_path / "manifest.yaml", timeout=30)
    message = str(info.value)
    assert info.value.exit_code == 4
    # The exit code is said when it was collected in time (a busy machine may not have it yet); OPA's words always.
    assert re.match(r"OPA refused to start( \(exit code 1\))?: ", message) and "rego_recursion_error" in message
    assert "canary.rego:6" in message
    assert not list((tmp_path / ".swiftdeploy" / "pids").glob("*.json"))
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["event"] for r in history] == ["deploy_started", "deploy_failed"]
