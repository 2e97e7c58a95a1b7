"""The manifest as users meet it: defaults, located errors with did-you-mean, and refused injection characters
(exit 2 through the CLI, nothing written)."""

from __future__ import annotations

import json

import pytest

from swiftdeploy.cli import run
from swiftdeploy.errors import ManifestError
from swiftdeploy.manifest import load_manifest, parse_manifest
from swiftdeploy.manifest.types import FORBIDDEN

BASE = {
    "services": {"name": "app", "image": "demo:1", "port": 3000, "version": "1.0.0", "command": ["python3", "-m", "x"]},
    "canary": {"image": "demo:2", "version": "2.0.0"},
    "nginx": {"image": "nginx:1.27", "contact": "ops@example.com", "proxy_timeout": "30s"},
    "network": {"name": "net"},
    "opa": {"image": "openpolicyagent/opa:1.22.3", "timeout": "2s"},
    "policy": {"window_seconds": "30s"},
    "project": "demo",
    "output_dir": "deploy",
}
# Every string field, and where a forbidden character goes in its value.
FIELDS = {
    ("services", "name"): "app{}x",
    ("services", "image"): "demo{}:1",
    ("services", "version"): "1.0{}",
    ("services", "command"): ["python3", "-m", "x{}"],
    ("canary", "image"): "demo:2{}",
    ("canary", "version"): "2{}.0",
    ("nginx", "image"): "nginx:1.27{}",
    ("nginx", "contact"): "ops{}@example.com",
    ("nginx", "proxy_timeout"): "30s{}",
    ("network", "name"): "n{}et",
    ("opa", "image"): "openpolicyagent/opa:1.22.3{}",
    ("opa", "timeout"): "2{}s",
    ("opa", "binary"): "bin/o{}pa",
    ("policy", "window_seconds"): "30{}s",
    ("policy", "dir"): "pol{}icies",
    ("project",): "demo{}",
    ("output_dir",): "dep{}loy",
}


def _with(path: tuple[str, ...], value: object) -> str:
    data = json.loads(json.dumps(BASE))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(data, ensure_ascii=False)  # JSON is YAML: every character arrives as written


def _inject(template: object, char: str) -> object:
    if isinstance(template, list):
        return [_inject(item, char) for item in template]
    return template.format(char) if "{}" in template else template


def test_base_manifest_is_valid():
    m = parse_manifest(json.dumps(BASE))
    assert m.services.command == ["python3", "-m", "x"] and m.project_name == "demo"


@pytest.mark.parametrize("char", sorted(FORBIDDEN), ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("path", sorted(FIELDS), ids=".".join)
def test_forbidden_character_is_refused(path, char):
    text = _with(path, _inject(FIELDS[path], char))
    with pytest.raises(ManifestError) as info:
        parse_manifest(text)
    assert ".".join(path) in str(info.value)


@pytest.mark.parametrize("char", sorted(FORBIDDEN), ids=lambda c: f"U+{ord(c):04X}")
def test_forbidden_character_exits_2_and_writes_nothing(manifests, capsys, char):
    for path in sorted(FIELDS):
        manifest = manifests.write(_with(path, _inject(FIELDS[path], char)))
        assert run(["-m", str(manifest), "init"]) == 2, path
        assert sorted(p.name for p in manifest.parent.iterdir()) == ["manifest.yaml"], path
        err = capsys.readouterr().err
        assert "invalid manifest" in err and ".".join(path) in err


def test_minimal_manifest_gets_defaults(minimal_text):
    m = parse_manifest(minimal_text)
    assert (m.services.name, m.services.mode, m.canary.weight, m.nginx.admin_port) == ("app", "stable", 10, 8081)
    assert (m.policy.engine, m.runtime, m.project_name) == ("auto", "docker", "swiftdeploy-app")


def test_example_manifest_shows_every_field(example_path):
    """Every model field appears in the example (set, or as a commented line for the optional ones)."""
    from pydantic import BaseModel

    from swiftdeploy.checks import _unset_fields
    from swiftdeploy.manifest import Manifest

    text = example_path.read_text()
    m = load_manifest(example_path)

    def fields(model: type[BaseModel]) -> list[str]:
        names = []
        for name, info in model.model_fields.items():
            names.append(name)
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                names += fields(info.annotation)
        return names

    missing = [name for name in fields(Manifest) if f"{name}:" not in text]
    assert missing == []
    unset = {path.rsplit(".", 1)[-1] for path in _unset_fields(m, "")}
    for name in unset:  # optional fields left unset are shown commented out, with their meaning
        assert f"# {name}:" in text, name


def test_unknown_key_names_line_column_and_nearest_key():
    text = "services:\n  image: demo:1\nnginx:\n  port: 8080\n  proxy_timout: 3s\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, source="manifest.yaml")
    (problem,) = info.value.problems
    assert problem == "manifest.yaml:5:3: nginx.proxy_timout: unknown field; did you mean `proxy_timeout`?"


def test_top_level_typo_and_missing_required_field():
    with pytest.raises(ManifestError) as info:
        parse_manifest("servics:\n  image: demo:1\n", source="m.yaml")
    problems = info.value.problems
    assert "m.yaml:1:1: servics: unknown field; did you mean `services`?" in problems
    assert any(p.endswith("services: required field is missing") for p in problems)


def test_bad_value_points_at_the_value():
    text = "services:\n  image: demo:1\n  port: 70000\nnginx:\n  contact: not-an-email\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, source="manifest.yaml")
    problems = "\n".join(info.value.problems)
    assert "manifest.yaml:3:9: services.port:" in problems
    assert "manifest.yaml:5:12: nginx.contact: 'not-an-email' is not a valid e-mail" in problems


def test_unknown_key_without_close_match_lists_valid_fields():
    with pytest.raises(ManifestError) as info:
        parse_manifest("services: {image: demo:1, zzzzzz: 1}\n")
    assert "valid fields here: command, health_path, image, mode, name, port, replicas, restart_policy, version" in str(
        info.value
    )


def test_yaml_syntax_error_has_location():
    with pytest.raises(ManifestError, match=r"manifest.yaml:\d+:\d+: YAML syntax error"):
        parse_manifest("services:\n  image: [demo\n")


def test_ports_must_be_distinct_and_names_not_reserved():
    with pytest.raises(ManifestError, match="nginx.admin_port and nginx.port are both 8080"):
        parse_manifest("services: {image: a}\nnginx: {port: 8080, admin_port: 8080}\n")
    with pytest.raises(ManifestError, match="name of a generated compose service"):
        parse_manifest("services: {image: a, name: nginx}\n")


def test_missing_file_is_exit_2(tmp_path, capsys):
    assert run(["-m", str(tmp_path / "nope.yaml"), "init"]) == 2
    assert "manifest not found" in capsys.readouterr().err
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / "nope.yaml")
