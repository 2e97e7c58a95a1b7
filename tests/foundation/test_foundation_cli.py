"""The foundation commands through the real CLI entry (`run`) and the console script: exit codes 0/1/2, --json."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import SWIFTDEPLOY, app_port_block, distinct_ports

from swiftdeploy.cli import run


def _local_manifest(manifests, extra: str = "") -> Path:
    ports = [app_port_block(), *distinct_ports(2)]
    text = (
        f"services: {{image: demo:1, port: {ports[0]}}}\n"
        f"nginx: {{port: {ports[1]}, admin_port: {ports[2]}}}\n"
        "policy: {engine: embedded}\n"
        "runtime: local\n" + extra
    )
    return manifests.write(text)


# --- init -------------------------------------------------------------------------------------------------------


def test_init_writes_reports_and_records_history(manifests, minimal_text, capsys):
    path = manifests.write(minimal_text)
    assert run(["-m", str(path), "init"]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "nginx.conf" in out and "docker-compose.yml" in out
    assert (path.parent / "policy-bundle" / "data.json").is_file()
    assert run(["-m", str(path), "init"]) == 0
    assert "unchanged" in capsys.readouterr().out
    records = [json.loads(line) for line in (path.parent / "history.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["init", "init"]
    assert "nginx.conf" in records[0]["files"] and records[1]["files"] == []
    import hashlib

    assert records[0]["manifest_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_check_exit_1_with_diff_on_stdout(manifests, minimal_text, capsys):
    path = manifests.write(minimal_text)
    assert run(["-m", str(path), "init"]) == 0
    capsys.readouterr()
    assert run(["-m", str(path), "init", "--check"]) == 0
    assert capsys.readouterr().out == ""  # fresh files: no diff
    conf = path.parent / "nginx.conf"
    conf.write_text(conf.read_text() + "# hand edit\n")
    before = conf.read_text()
    assert run(["-m", str(path), "init", "--check"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("--- a/nginx.conf\n+++ b/nginx.conf\n") and "-# hand edit" in captured.out
    assert "differ" in captured.err and "swiftdeploy init" in captured.err
    assert conf.read_text() == before  # --check writes nothing


def test_init_check_on_missing_files_is_drift(manifests, minimal_text, capsys):
    path = manifests.write(minimal_text)
    assert run(["-m", str(path), "init", "--check"]) == 1
    assert "+++ b/docker-compose.yml" in capsys.readouterr().out
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.yaml"]


def test_init_dry_run_shows_diff_and_writes_nothing(manifests, minimal_text, capsys):
    path = manifests.write(minimal_text)
    assert run(["-m", str(path), "init", "--dry-run"]) == 0
    assert "+++ b/nginx.conf" in capsys.readouterr().out
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.yaml"]
    assert run(["-m", str(path), "init", "--check", "--dry-run"]) == 2


def test_init_invalid_manifest_exit_2_writes_nothing(manifests, capsys):
    path = manifests.write("services: {image: demo:1, port: 3000}\nnginx: {proxy_timout: 3s}\n")
    assert run(["-m", str(path), "init"]) == 2
    err = capsys.readouterr().err
    assert "manifest.yaml:2:9: nginx.proxy_timout: unknown field; did you mean `proxy_timeout`?" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.yaml"]


def test_unknown_option_is_usage_error(manifests, minimal_text):
    assert run(["-m", str(manifests.write(minimal_text)), "init", "--nope"]) == 2


# --- validate ---------------------------------------------------------------------------------------------------


def test_validate_all_green_exit_0(manifests, capsys):
    path = _local_manifest(manifests)
    assert run(["-m", str(path), "init"]) == 0
    capsys.readouterr()
    assert run(["-m", str(path), "validate", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(set(row) == {"check", "ok", "detail", "fix"} for row in rows)
    assert [row for row in rows if not row["ok"]] == []
    checks = [row["check"] for row in rows]
    assert checks[:3] == ["manifest valid", "required fields", "app command"]
    assert "nginx -t (nginx.conf)" in checks and "nginx -t (local runtime variant)" in checks
    assert "generated files fresh" in checks and "policies compile" in checks
    # public + admin + the four app ports (services.port to + 3); OPA is not deployed
    assert sum(c.startswith("port ") for c in checks) == 6
    assert run(["-m", str(path), "validate"]) == 0  # the table for people
    assert "swiftdeploy validate" in capsys.readouterr().out


def test_validate_stale_files_and_busy_port_exit_1(manifests, capsys):
    path = _local_manifest(manifests)  # no init: generated files are missing
    from swiftdeploy.manifest import load_manifest

    admin = load_manifest(path).nginx.admin_port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", admin))
        busy.listen()
        assert run(["-m", str(path), "validate", "--json"]) == 1
    captured = capsys.readouterr()
    rows = {row["check"]: row for row in json.loads(captured.out)}
    assert not rows["generated files fresh"]["ok"] and "swiftdeploy init" in rows["generated files fresh"]["fix"]
    assert "nginx.conf (missing)" in rows["generated files fresh"]["detail"]
    port_row = rows[f"port {admin} free (admin)"]
    # the holder is named as deploy names it: the field, the pid and its command line
    assert not port_row["ok"] and "nginx.admin_port" in port_row["fix"]
    assert f"port {admin} (nginx.admin_port) is already in use by pid {os.getpid()} (" in port_row["detail"]
    assert "2 checks failed" in captured.err


def test_validate_without_docker_engine_is_a_failed_row(manifests, minimal_text, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    path = manifests.write(minimal_text)
    assert run(["-m", str(path), "validate", "--json"]) == 1
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    engine = rows["docker engine"]
    assert not engine["ok"] and "no Docker engine answers" in engine["detail"] and "runtime: local" in engine["fix"]
    assert rows["nginx -t (nginx.conf)"]["ok"]  # the other checks still ran


def test_validate_without_nginx_says_how_to_install(manifests, capsys, monkeypatch):
    from swiftdeploy import checks
    from swiftdeploy.errors import RuntimeUnavailable

    def no_nginx() -> str:
        raise RuntimeUnavailable("nginx is not installed")

    monkeypatch.setattr(checks, "find_nginx", no_nginx)
    path = _local_manifest(manifests)
    assert run(["-m", str(path), "validate", "--json"]) == 1
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    assert not rows["nginx -t"]["ok"] and "apt-get install -y nginx-light" in rows["nginx -t"]["fix"]


def test_validate_broken_policy_dir_is_a_failed_row(manifests, capsys):
    path = _local_manifest(manifests, "policy: {engine: embedded, dir: mypolicies}\n")
    path.write_text(path.read_text().replace("policy: {engine: embedded}\n", ""))
    folder = path.parent / "mypolicies"
    folder.mkdir()
    (folder / "bad.rego").write_text("package swiftdeploy.infrastructure\n\ndecision := {\n")
    assert run(["-m", str(path), "validate", "--json"]) == 1
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    assert not rows["policies compile"]["ok"] and "bad.rego" in rows["policies compile"]["detail"]


def test_validate_missing_app_module_is_a_failed_row(manifests, capsys):
    path = _local_manifest(manifests)
    path.write_text(
        path.read_text().replace("image: demo:1,", f"image: demo:1, command: [{sys.executable}, -m, nope_mod],")
    )
    assert run(["-m", str(path), "validate", "--json"]) == 1
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    assert not rows["app command"]["ok"] and "nope_mod" in rows["app command"]["detail"]


def test_validate_invalid_manifest_exit_2_with_json_row(manifests, capsys):
    path = manifests.write("services: {image: 'demo:1;rm -rf /'}\n")
    assert run(["-m", str(path), "validate", "--json"]) == 2
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert row["check"] == "manifest valid" and not row["ok"] and "services.image" in row["detail"]
    assert "forbidden character" in captured.err


# --- schema, version, console script ----------------------------------------------------------------------------


def test_schema_and_version(capsys):
    assert run(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "services" in schema["properties"]
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("swiftdeploy ")


def test_console_script_exit_codes(manifests, minimal_text):
    exe = SWIFTDEPLOY
    if not Path(exe).exists():
        pytest.skip("console script not installed in this environment")
    path = manifests.write(minimal_text)
    ok = subprocess.run([exe, "-m", str(path), "init"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (path.parent / "nginx.conf").write_text("edited\n")
    drift = subprocess.run([exe, "-m", str(path), "init", "--check"], capture_output=True, text=True)
    assert drift.returncode == 1 and drift.stdout.startswith("--- a/nginx.conf")
    bad = manifests.write("services: {image: demo:1, port: 0}\n")
    invalid = subprocess.run([exe, "-m", str(bad), "init"], capture_output=True, text=True)
    assert invalid.returncode == 2 and "services.port" in invalid.stderr and "Traceback" not in invalid.stderr


def test_unexpected_exception_is_one_line_exit_1_and_traceback_only_with_debug(
    manifests, minimal_text, monkeypatch, capsys
):
    import swiftdeploy.generate

    path = manifests.write(minimal_text)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(swiftdeploy.generate, "plan", broken)
    monkeypatch.delenv("SWIFTDEPLOY_DEBUG", raising=False)
    assert run(["-m", str(path), "init"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: disk on fire" in err and "SWIFTDEPLOY_DEBUG=1" in err
    monkeypatch.setenv("SWIFTDEPLOY_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(["-m", str(path), "init"])
