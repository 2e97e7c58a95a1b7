"""Plugins through the real console script: discovery, failure isolation, clashes, the switch, `plugins --json`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

FACT_KEYS = {"disk_free_gb", "disk_path", "cpu_load_1m", "cpu_count", "memory_used_percent", "memory_available_gb"}
WARNING_TAIL = "run with SWIFTDEPLOY_PLUGINS=0 to disable plugins"


def write_dist(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution: METADATA + entry_points.txt in a dist-info folder, and its modules."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[swiftdeploy.plugins]\n{lines}")
    for name, text in modules.items():
        (site / f"{name}.py").write_text(text)


def plugins_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_name(document: dict) -> dict[str, dict]:
    return {p["name"]: p for p in document["plugins"]}


def test_example_plugin_discovered_through_console_script(swiftdeploy, hello_site: Path) -> None:
    listed = swiftdeploy("--help", sites=(hello_site,))
    assert listed.returncode == 0, listed.stderr
    assert "hello" in listed.stdout

    facts = swiftdeploy("hello", "facts", "--json", sites=(hello_site,))
    assert facts.returncode == 0, facts.stderr
    assert facts.stderr == ""
    found = json.loads(facts.stdout)
    assert set(found) >= FACT_KEYS
    assert found["cpu_count"] >= 1

    hello = by_name(plugins_json(swiftdeploy("plugins", "--json", sites=(hello_site,))))["hello"]
    assert hello["status"] == "loaded"
    assert hello["version"] == "0.1.0"
    assert hello["dist"] == "swiftdeploy-hello"
    assert hello["value"] == "swiftdeploy_hello:app"
    assert hello["origin"] == "swiftdeploy_hello:app (swiftdeploy-hello 0.1.0)"
    assert hello["error"] is None


def test_example_plugin_under_python_dash_m(swiftdeploy, hello_site: Path) -> None:
    result = swiftdeploy("hello", "facts", sites=(hello_site,), module=True)
    assert result.returncode == 0, result.stderr
    assert "disk_free_gb" in result.stdout


def test_example_plugin_measures_the_manifest_folder(swiftdeploy, hello_site: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "manifest.yaml").write_text("services: {image: 'demo:1', port: 3000}\n")
    result = swiftdeploy("-m", str(project / "manifest.yaml"), "hello", "facts", "--json", sites=(hello_site,))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["disk_path"] == str(project)

    # A broken manifest is the CLI's usual error (exit 2, one line), not a traceback from the plugin.
    (project / "manifest.yaml").write_text("services: {image: 'demo:1', prot: 3000}\n")
    result = swiftdeploy("-m", str(project / "manifest.yaml"), "hello", "facts", sites=(hello_site,))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    site = tmp_path / "broken-site"
    write_dist(
        site,
        "broken-plugin",
        "1.0",
        {"broken": "broken_mod:app"},
        {"broken_mod": "raise ImportError('no module named shiny_dependency')\n"},
    )
    write_dist(site, "exiting-plugin", "2.0", {"exits": "exiting_mod:app"}, {"exiting_mod": "raise SystemExit(3)\n"})
    write_dist(site, "notatyper", "0.3", {"wrong": "wrong_mod:app"}, {"wrong_mod": "def app():\n    pass\n"})
    return site


def test_broken_plugins_warn_once_each_and_cli_still_works(swiftdeploy, hello_site: Path, broken_site: Path) -> None:
    result = swiftdeploy("schema", sites=(hello_site, broken_site))
    assert result.returncode == 0
    json.loads(result.stdout)  # the built-in still answers, stdout untouched by warnings
    warnings = result.stderr.splitlines()
    assert warnings == [
        "warning: plugin 'broken' (broken-plugin 1.0) failed to load: ImportError: no module named shiny_dependency; "
        + WARNING_TAIL,
        f"warning: plugin 'exits' (exiting-plugin 2.0) failed to load: SystemExit: 3; {WARNING_TAIL}",
        "warning: plugin 'wrong' (notatyper 0.3) failed to load: TypeError: wrong_mod:app is a builtins.function, "
        f"not a typer.Typer app; {WARNING_TAIL}",
    ]

    # The healthy plugin beside them still loads and runs.
    hello = swiftdeploy("hello", "facts", "--json", sites=(hello_site, broken_site))
    assert hello.returncode == 0
    assert set(json.loads(hello.stdout)) >= FACT_KEYS

    listed = by_name(plugins_json(swiftdeploy("plugins", "--json", sites=(hello_site, broken_site))))
    assert {n: p["status"] for n, p in listed.items()} == {
        "broken": "failed",
        "exits": "failed",
        "wrong": "failed",
        "hello": "loaded",
    }
    assert listed["broken"]["error"] == "ImportError: no module named shiny_dependency"
    assert listed["broken"]["origin"] == "broken_mod:app (broken-plugin 1.0)"


def test_clash_with_builtin_is_refused(swiftdeploy, tmp_path: Path) -> None:
    site = tmp_path / "clash-site"
    marker = tmp_path / "imported"
    # Importing the module would leave a marker: a refused plugin must not even be imported.
    module = (
        f"import pathlib, typer\npathlib.Path({str(marker)!r}).write_text('x')\napp = typer.Typer()\n"
        "@app.command()\ndef hijack():\n    print('hijacked')\n"
    )
    write_dist(site, "evil", "6.6", {"schema": "evil_mod:app", "plugins": "evil_mod:app"}, {"evil_mod": module})

    result = swiftdeploy("schema", sites=(site,))
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "swiftdeploy manifest"  # the built-in, not the plugin
    assert "hijacked" not in result.stdout
    assert result.stderr.splitlines() == [
        "warning: plugin 'plugins' (evil 6.6) refused: the name clashes with the built-in command 'plugins'; "
        "rename the entry point",
        "warning: plugin 'schema' (evil 6.6) refused: the name clashes with the built-in command 'schema'; "
        "rename the entry point",
    ]
    assert not marker.exists()
    listed = by_name(plugins_json(swiftdeploy("plugins", "--json", sites=(site,))))
    assert listed["schema"]["status"] == "refused"


def test_two_plugins_wanting_one_name(swiftdeploy, hello_site: Path, tmp_path: Path) -> None:
    site = tmp_path / "twin-site"
    write_dist(
        site, "hello-twin", "9.0", {"hello": "twin_mod:app"}, {"twin_mod": "import typer\napp = typer.Typer()\n"}
    )
    result = swiftdeploy("plugins", "--json", sites=(hello_site, site))
    statuses = sorted((p["dist"], p["status"]) for p in plugins_json(result)["plugins"])
    assert statuses == [("hello-twin", "refused"), ("swiftdeploy-hello", "loaded")]
    assert "already taken by the plugin from swiftdeploy-hello" in result.stderr


def test_disable_switch(swiftdeploy, hello_site: Path, broken_site: Path) -> None:
    sites = (hello_site, broken_site)
    off = swiftdeploy("--help", sites=sites, plugins="0")
    assert off.returncode == 0
    assert "hello" not in off.stdout
    assert off.stderr == ""  # broken plugins are not even imported
    assert swiftdeploy("hello", "facts", sites=sites, plugins="0").returncode == 2  # no such command
    document = plugins_json(swiftdeploy("plugins", "--json", sites=sites, plugins="0"))
    assert document["enabled"] is False
    assert document["plugins"] == []
    assert "disabled" in swiftdeploy("plugins", sites=sites, plugins="0").stdout


def test_allow_list(swiftdeploy, hello_site: Path, broken_site: Path) -> None:
    sites = (hello_site, broken_site)
    result = swiftdeploy("plugins", "--json", sites=sites, plugins="hello, ghost")
    assert result.stderr == ""  # the broken ones were not imported, so nothing to warn about
    document = plugins_json(result)
    assert document["allow"] == ["ghost", "hello"]
    statuses = {n: p["status"] for n, p in by_name(document).items()}
    assert statuses == {
        "hello": "loaded",
        "broken": "disabled",
        "exits": "disabled",
        "wrong": "disabled",
        "ghost": "not-installed",
    }
    assert swiftdeploy("hello", "facts", "--json", sites=sites, plugins="hello").returncode == 0


def test_plugins_human_listing(swiftdeploy, hello_site: Path, broken_site: Path) -> None:
    result = swiftdeploy("plugins", sites=(hello_site, broken_site))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "VERSION", "ORIGIN"]
    assert any(line.split()[:3] == ["hello", "loaded", "0.1.0"] for line in lines)
    assert "  broken: ImportError: no module named shiny_dependency" in lines
    empty = swiftdeploy("plugins")
    assert empty.stdout.startswith("no plugins installed")
