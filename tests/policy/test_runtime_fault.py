"""A fault in the Rego itself (conflicting rule values, a builtin failing on the input) is a PolicyError, exit 2,
on both engines: the embedded engine (regorus) and a real OPA server (the `opa_binary` fixture of
tests/conftest.py: `make opa`, or `opa` on PATH). Engine trouble stays exit 4."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import free_port

from swiftdeploy.cli import run
from swiftdeploy.errors import PolicyEngineUnavailable, PolicyError
from swiftdeploy.policy.bundle import load_policy_set
from swiftdeploy.policy.embedded import EmbeddedEngine
from swiftdeploy.policy.opa import OpaEngine

CONFLICT = """package swiftdeploy.canary

import rego.v1

decision := {"allow": true, "verdict": "allow", "violations": []} if input.a == 1

decision := {"allow": false, "verdict": "deny", "violations": [{"rule": "r", "message": "m"}]} if input.b == 1
"""
BUILTIN = """package swiftdeploy.infrastructure

import rego.v1

decision := {"allow": to_number(input.load) < 2, "verdict": "allow", "violations": []}
"""
FAULTS = {"canary": {"a": 1, "b": 1}, "infrastructure": {"load": "high"}}
WORDS = {"canary": "conflict", "infrastructure": "number"}


@pytest.fixture
def faulty(tmp_path: Path) -> Path:
    folder = tmp_path / "faulty"
    folder.mkdir()
    (folder / "canary.rego").write_text(CONFLICT)
    (folder / "infrastructure.rego").write_text(BUILTIN)
    return folder


@pytest.fixture
def opa_server(opa_binary: str) -> Iterator:
    """serve(folder) -> base URL of a real OPA server on 127.0.0.1 serving that folder; stopped afterwards."""
    binary = opa_binary
    procs: list[subprocess.Popen] = []

    def serve(folder: Path) -> str:
        port = free_port()
        argv = [binary, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error", str(folder)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "opa exited"
            try:
                if httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "opa did not answer /health within 20 s"
            time.sleep(0.1)

    yield serve
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("domain", ["canary", "infrastructure"])
def test_embedded_engine_reports_a_rego_fault_as_policy_error(faulty: Path, domain: str) -> None:
    with pytest.raises(PolicyError) as info:
        EmbeddedEngine(load_policy_set(folder=faulty)).evaluate(domain, FAULTS[domain])
    assert info.value.exit_code == 2
    assert WORDS[domain] in str(info.value) and f"{domain}.rego:" in str(info.value)


@pytest.mark.parametrize("domain", ["canary", "infrastructure"])
def test_real_opa_reports_the_same_rego_fault_as_policy_error(faulty: Path, opa_server, domain: str) -> None:
    with OpaEngine(opa_server(faulty), timeout=5.0) as engine, pytest.raises(PolicyError) as info:
        engine.evaluate(domain, FAULTS[domain])
    assert info.value.exit_code == 2
    message = str(info.value)
    assert f"{domain}.rego:" in message and "eval_" in message and WORDS[domain] in message


def test_opa_errors_that_are_not_about_the_policy_stay_engine_unavailable() -> None:
    bodies = [
        {"code": "internal_error", "message": "storage failure"},
        {"code": "internal_error", "message": "x", "errors": [{"code": "storage_error", "message": "disk"}]},
        "not an object",
    ]
    for body in bodies:
        transport = httpx.MockTransport(lambda r, body=body: httpx.Response(500, json=body))
        with pytest.raises(PolicyEngineUnavailable) as info:
            OpaEngine("http://127.0.0.1:8181", transport=transport).evaluate("canary", {})
        assert info.value.exit_code == 4


def test_bundled_policies_decide_alike_on_real_opa_in_strict_mode(tmp_path: Path, opa_server) -> None:
    """The bundled policies compile on OPA, and strict-builtin-errors does not turn a rule into an error: good, bad
    and malformed inputs decide the same on both engines."""
    policy_set = load_policy_set()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, text in policy_set.policies.items():
        (bundle / name).write_text(text)
    (bundle / "data.json").write_text(policy_set.data_json())
    track = {"requests": 200, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 20.0, "p99_ms": 100.0}
    failing = {**track, "error_rate_percent": 40.0, "p99_ms": 900}
    host = {"disk_free_gb": 50.0, "disk_path": "/", "cpu_load_1m": 0.5, "memory_used_percent": 40.0}
    inputs = [
        ("infrastructure", host),
        ("infrastructure", {**host, "disk_free_gb": 1}),
        ("infrastructure", {**host, "cpu_load_1m": "high", "memory_used_percent": None}),
        ("infrastructure", [host]),
        ("canary", {"window_seconds": 30, "canary": track, "stable": track}),
        ("canary", {"window_seconds": 30, "canary": failing, "stable": None}),
        ("canary", {"window_seconds": 30, "canary": failing, "stable": track}),
        ("canary", {"window_seconds": "30s", "canary": {**track, "p99_ms": "600", "requests": "lots"}, "stable": 5}),
        ("canary", {"window_seconds": 30, "canary": {**track, "requests": 3}, "stable": None}),
        ("canary", "promote me"),
    ]  # fmt: skip
    embedded = EmbeddedEngine(policy_set)
    with OpaEngine(opa_server(bundle), timeout=5.0) as opa:
        for domain, data in inputs:
            ours, theirs = embedded.evaluate(domain, data).to_dict(), opa.evaluate(domain, data).to_dict()
            ours.pop("engine"), theirs.pop("engine")
            assert ours == theirs, (domain, data)


def test_cli_exits_2_on_a_rego_fault_with_either_engine(tmp_path: Path, faulty: Path, opa_server, capsys) -> None:
    (tmp_path / "in.json").write_text(json.dumps(FAULTS["canary"]))
    url = opa_server(faulty)
    port = int(url.rsplit(":", 1)[1])
    for engine in ("embedded", "opa"):
        manifest = tmp_path / f"{engine}.yaml"
        manifest.write_text(
            "services: {image: demo:1, port: 3000}\nruntime: local\n"
            f"policy: {{engine: {engine}, dir: faulty}}\nopa: {{port: {port}, timeout: 5}}\n"
        )
        capsys.readouterr()
        assert run(["-m", str(manifest), "policy", "eval", "canary", "-i", str(tmp_path / "in.json")]) == 2, engine
        err = capsys.readouterr().err
        assert err.startswith("error: evaluating data.swiftdeploy.canary.decision") and "conflict" in err, err
        assert "Traceback" not in err
