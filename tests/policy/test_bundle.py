"""Where policies come from: the bundled defaults (also inside a built wheel), policy.dir, threshold overrides,
the OPA bundle, and compile errors with file:line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from swiftdeploy.errors import PolicyError
from swiftdeploy.policy import check_policies, evaluate
from swiftdeploy.policy.bundle import PolicySet, bundle_revision, load_policy_set, render_bundle

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = json.loads((REPO / "policies" / "data.json").read_text())["swiftdeploy"]["thresholds"]


def test_default_thresholds_match_the_design() -> None:
    assert DEFAULTS == {
        "min_disk_free_gb": 10,
        "max_cpu_load_per_core": 2.0,  # a fully busy host is 1.0; 2.0 is a task waiting on every core
        "allow_direct_deploy": False,
        "max_memory_used_percent": 90,
        "max_error_rate_percent": 1,
        "max_p99_latency_ms": 500,
        "min_requests": 20,
        # the statistical canary gate (docs/policies.md): a P99 of 500 ms is "at most 1 % slower than 500 ms";
        # deny on 99 % confidence of a breach, allow on 95 % confidence of staying under the bad rates
        "max_slow_percent": 1,
        "bad_error_rate_percent": 2,
        "bad_slow_percent": 2,
        "deny_confidence_percent": 99.5,
        "ratio_confidence_percent": 96,
        "allow_confidence_percent": 95,
        "max_error_rate_ratio": 1.5,
        "max_p99_ratio": 2.0,
        "min_p99_ms_for_ratio": 250,
    }


def test_render_bundle_is_the_policies_plus_merged_data(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: opa\n  thresholds: {max_cpu_load: 4, min_requests: 50}\n", engine=None)
    files = render_bundle(load_policy_set(m))
    assert sorted(files) == [
        "policy-bundle/.manifest",
        "policy-bundle/canary.rego",
        "policy-bundle/data.json",
        "policy-bundle/infrastructure.rego",
        "policy-bundle/system/authz.rego",
    ]
    assert files["policy-bundle/canary.rego"] == (REPO / "policies" / "canary.rego").read_text()
    data = json.loads(files["policy-bundle/data.json"])
    assert data["swiftdeploy"]["thresholds"] == {**DEFAULTS, "max_cpu_load": 4, "min_requests": 50}
    text = files["policy-bundle/data.json"]
    assert text.endswith("}\n") and text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert render_bundle(load_policy_set(m)) == files  # deterministic
    # The revision names every other file: a changed threshold is another revision.
    revision = json.loads(files["policy-bundle/.manifest"])["revision"]
    assert revision == bundle_revision({k.removeprefix("policy-bundle/"): v for k, v in files.items()})
    other = write_manifest("policy:\n  engine: opa\n  thresholds: {max_cpu_load: 5, min_requests: 50}\n", engine=None)
    assert json.loads(render_bundle(load_policy_set(other))["policy-bundle/.manifest"])["revision"] != revision


def test_the_authorization_policy_allows_exactly_what_swiftdeploy_asks() -> None:
    """Evaluated here with the embedded engine on OPA's authz input shape; test_opa_real.py asks the real OPA."""
    from swiftdeploy.policy.bundle import authz_policy
    from swiftdeploy.policy.embedded import EmbeddedEngine

    engine = EmbeddedEngine(PolicySet(origin="authz", modules={"system/authz.rego": authz_policy()}))

    def allowed(method: str, path: str, params: dict | None = None) -> bool:
        request = {"method": method, "path": path.strip("/").split("/"), "params": params or {}, "headers": {}}
        return engine.query("data.system.authz.allow", request) == (True, True)

    assert allowed("GET", "/health")
    for domain in ("canary", "infrastructure"):
        assert allowed("POST", f"/v1/data/swiftdeploy/{domain}/decision")
        assert allowed("POST", f"/v1/data/swiftdeploy/{domain}/decision", {"provenance": ["true"]})
        both = {"provenance": ["true"], "strict-builtin-errors": ["true"]}
        assert allowed("POST", f"/v1/data/swiftdeploy/{domain}/decision", both)
        assert not allowed("POST", f"/v1/data/swiftdeploy/{domain}/decision", {"provenance": ["false"]})
        assert not allowed("POST", f"/v1/data/swiftdeploy/{domain}/decision", {**both, "metrics": ["true"]})
        assert not allowed("POST", f"/v1/data/swiftdeploy/{domain}/decision", {"explain": ["full"]})
        assert not allowed("GET", f"/v1/data/swiftdeploy/{domain}/decision")
        assert not allowed("PUT", f"/v1/data/swiftdeploy/{domain}/decision")
    assert not allowed("GET", "/health", {"bundles": [""]})
    for method in ("PUT", "PATCH", "DELETE", "POST", "GET"):
        assert not allowed(method, "/v1/policies/canary.rego")
        assert not allowed(method, "/v1/data/swiftdeploy/thresholds")
    assert not allowed("POST", "/v1/data/swiftdeploy/other/decision")
    assert not allowed("POST", "/v1/query")


def test_a_policy_dir_may_not_declare_a_system_package(write_manifest, tmp_path: Path) -> None:
    own_policies(tmp_path / "rules")
    (tmp_path / "rules" / "mine.rego").write_text("package system.authz\n\nimport rego.v1\n\nallow := true\n")
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    with pytest.raises(PolicyError, match="declares a `system` package"):
        render_bundle(load_policy_set(m))


def test_the_bundle_is_what_the_embedded_engine_evaluates(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: embedded\n  thresholds: {max_cpu_load: 4}\n", engine=None)
    facts = {"disk_free_gb": 50, "cpu_load_1m": 3.5, "cpu_count": 1, "memory_used_percent": 10}
    assert evaluate(m, "infrastructure", facts).allow
    assert [v.rule for v in evaluate(None, "infrastructure", facts).violations] == ["cpu_load_per_core"]  # 2.0/core


def own_policies(folder: Path, *, data: dict | None = None, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for domain in ("infrastructure", "canary"):
        (folder / f"{domain}.rego").write_text(
            f"package swiftdeploy.{domain}\n\nimport rego.v1\n\n"
            "default allow := false\n\n"
            "allow if input.ok == true\n\n"
            'decision := {"allow": true, "verdict": "allow", "violations": []} if allow\n\n'
            'else := {"allow": false, "verdict": "deny", "violations": [{"rule": "not_ok", "message": "input.ok is '
            'not true", "observed": object.get(input, "ok", null), "threshold": true, "unit": ""}]}\n' + extra
        )
    if data is not None:
        (folder / "data.json").write_text(json.dumps(data))
    return folder


def test_policy_dir_replaces_the_defaults(write_manifest, tmp_path: Path) -> None:
    own_policies(tmp_path / "rules")
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n  thresholds: {min_requests: 3}\n", engine=None)
    assert evaluate(m, "canary", {"ok": True}).allow
    d = evaluate(m, "canary", {"ok": False})
    assert [v.rule for v in d.violations] == ["not_ok"]
    check_policies(m)
    policy_set = load_policy_set(m)
    assert policy_set.origin == str(tmp_path / "rules")
    # no data.json of its own: the default thresholds, with the manifest's overrides merged
    assert policy_set.thresholds == {**DEFAULTS, "min_requests": 3}
    assert sorted(render_bundle(policy_set)) == [
        "policy-bundle/.manifest",
        "policy-bundle/canary.rego",
        "policy-bundle/data.json",
        "policy-bundle/infrastructure.rego",
        "policy-bundle/system/authz.rego",
    ]


def test_policy_dir_with_its_own_data(write_manifest, tmp_path: Path) -> None:
    own_policies(tmp_path / "rules", data={"swiftdeploy": {"thresholds": {"mine": 1}}, "extra": [1]})
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    assert load_policy_set(m).data == {"swiftdeploy": {"thresholds": {"mine": 1}}, "extra": [1]}


def test_missing_policy_dir_is_a_policy_error(write_manifest) -> None:
    m = write_manifest("policy:\n  engine: embedded\n  dir: nowhere\n", engine=None)
    with pytest.raises(PolicyError, match="policy.dir 'nowhere' is not a folder") as info:
        evaluate(m, "infrastructure", {})
    assert info.value.exit_code == 2


def test_syntax_error_names_file_and_line(write_manifest, tmp_path: Path) -> None:
    rules = own_policies(tmp_path / "rules")
    (rules / "broken.rego").write_text("package swiftdeploy.extra\n\nimport rego.v1\n\nx if {\n  input.a = = 1\n}\n")
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    for attempt in (lambda: check_policies(m), lambda: evaluate(m, "canary", {"ok": True})):
        with pytest.raises(PolicyError) as info:
            attempt()
        message = str(info.value)
        assert "broken.rego:6:" in message and "does not compile" in message
        assert "Stack backtrace" not in message  # RUST_BACKTRACE=1 is set by conftest
        assert info.value.exit_code == 2


def test_v0_syntax_is_refused_with_a_hint(write_manifest, tmp_path: Path) -> None:
    rules = own_policies(tmp_path / "rules")
    (rules / "old.rego").write_text("package swiftdeploy.old\n\nx { input.a == 1 }\n")
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    with pytest.raises(PolicyError, match=r"(?s)old\.rego:3:3.*`if` keyword is required"):
        check_policies(m)


def test_evaluation_time_errors_surface_in_check_policies(write_manifest, tmp_path: Path) -> None:
    """regorus resolves functions lazily; validate must still catch an unknown function before a deploy does."""
    own_policies(tmp_path / "rules", extra="\nunused if input.a == no_such_function(1)\n")
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    with pytest.raises(
        PolicyError, match=r"(?s)(canary|infrastructure)\.rego:13:\d+.*could not find function no_such_fun"
    ):
        check_policies(m)


def test_missing_domain_is_reported(write_manifest, tmp_path: Path) -> None:
    rules = own_policies(tmp_path / "rules")
    (rules / "canary.rego").unlink()
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    with pytest.raises(PolicyError, match="define no data.swiftdeploy.canary.decision"):
        check_policies(m)


def test_invalid_decision_shape_is_refused(write_manifest, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    own_policies(rules)
    (rules / "canary.rego").write_text('package swiftdeploy.canary\n\nimport rego.v1\n\ndecision := {"allow": true}\n')
    m = write_manifest("policy:\n  engine: embedded\n  dir: rules\n", engine=None)
    with pytest.raises(PolicyError, match="not a valid decision: missing key"):
        evaluate(m, "canary", {})


def test_default_policies_compile() -> None:
    check_policies(None)


def test_built_wheel_ships_the_policies_and_uses_them(tmp_path: Path) -> None:
    """Build the wheel (hatchling), unpack it away from the repo, and run `policy test` from it."""
    from hatchling.builders.wheel import WheelBuilder

    [wheel] = list(WheelBuilder(str(REPO)).build(directory=str(tmp_path / "dist"), versions=["standard"]))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in ("canary.rego", "infrastructure.rego", "data.json", "canary_test.rego"):
            assert f"swiftdeploy/policy/bundled/{name}" in names
        assert archive.read("swiftdeploy/policy/bundled/canary.rego") == (REPO / "policies/canary.rego").read_bytes()
        archive.extractall(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("SWIFTDEPLOY_MANIFEST", None)
    done = subprocess.run(
        [sys.executable, "-c", "from swiftdeploy.cli import main; main(['policy', 'test'])"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "site" / "swiftdeploy" / "policy" / "bundled") in done.stdout
    assert " 0 failed" in done.stdout
