"""The pieces of plugin loading that need no subprocess: the switch parser, the dist-info scan, name collection."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

from swiftdeploy import plugins


@pytest.mark.parametrize("raw", [None, "", "1", "all", "ALL", " yes "])
def test_selection_all(raw: str | None) -> None:
    chosen = plugins.selection({} if raw is None else {"SWIFTDEPLOY_PLUGINS": raw})
    assert chosen.enabled and chosen.allow is None and chosen.allows("anything")


@pytest.mark.parametrize("raw", ["0", "none", "off", "false", "No"])
def test_selection_none(raw: str) -> None:
    chosen = plugins.selection({"SWIFTDEPLOY_PLUGINS": raw})
    assert not chosen.enabled and not chosen.allows("hello")


def test_selection_allow_list() -> None:
    chosen = plugins.selection({"SWIFTDEPLOY_PLUGINS": " hello ,, other"})
    assert chosen.allow == {"hello", "other"}
    assert chosen.allows("hello") and not chosen.allows("broken")


def _dist(site: Path, folder: str, metadata: str, entry_points: str) -> Path:
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_text(metadata)
    (info / "entry_points.txt").write_text(entry_points)
    return info


def test_scan_reads_dist_info_without_importlib_metadata(tmp_path: Path) -> None:
    site, later = tmp_path / "site", tmp_path / "later"
    _dist(site, "tool-1.0.dist-info", "Name: tool\nVersion: 1.0\n", "[console_scripts]\ntool = tool:main\n")
    _dist(
        site,
        "Fancy_Plugin-2.1.dist-info",
        "Metadata-Version: 2.1\nName: fancy-plugin\nVersion: 2.1\n\nDescription: Version: 9\n",
        "# comment\n[console_scripts]\nx = y:z\n\n[swiftdeploy.plugins]\nfancy = fancy_mod:app\n"
        "other=fancy_mod:sub.app [extra]\n",
    )
    (site / "flat-1.0.egg-info").write_text("a PKG-INFO file, not a folder\n")
    # The same distribution again later on sys.path is shadowed, as for imports.
    _dist(later, "fancy_plugin-3.0.dist-info", "Name: fancy-plugin\nVersion: 3.0\n", "[swiftdeploy.plugins]\nz = m:a\n")
    found = plugins.scan([str(tmp_path / "missing"), str(site), str(later)])
    assert found is not None
    assert [(c.name, c.value, c.dist, c.version) for c in found] == [
        ("fancy", "fancy_mod:app", "fancy-plugin", "2.1"),
        ("other", "fancy_mod:sub.app [extra]", "fancy-plugin", "2.1"),
    ]
    assert plugins.scan([str(site / "tool-1.0.dist-info")]) == []


def test_scan_defers_to_importlib_metadata_for_archives(tmp_path: Path) -> None:
    archive = tmp_path / "lib.zip"
    archive.write_bytes(b"PK")
    assert plugins.scan([str(archive)]) is None
    (tmp_path / "old.egg").mkdir()
    assert plugins.scan([str(tmp_path)]) is None


def test_scan_agrees_with_importlib_metadata(tmp_path: Path) -> None:
    from importlib.metadata import distributions

    site = tmp_path / "site"
    _dist(site, "a_plugin-1.0.dist-info", "Name: a-plugin\nVersion: 1.0\n", "[swiftdeploy.plugins]\na = a_mod:app\n")
    _dist(site, "b-0.2.dist-info", "Name: b\nVersion: 0.2\n", "[swiftdeploy.plugins]\nb = b_mod:cli.app\n")
    ours = {(c.name, c.value, c.dist, c.version) for c in plugins.scan([str(site)]) or []}
    theirs = {
        (ep.name, ep.value, d.name, d.version)
        for d in distributions(path=[str(site)])
        for ep in d.entry_points
        if ep.group == plugins.GROUP
    }
    assert ours == theirs and len(ours) == 2


def test_plugins_in_a_zip_archive_are_found_through_importlib_metadata(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zp-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zp\nVersion: 1.0\n")
        zf.writestr("zp-1.0.dist-info/entry_points.txt", "[swiftdeploy.plugins]\nzipped = zp_mod:app\n")
        zf.writestr("zp_mod.py", "app = 'the zipped app'\n")
    found = plugins.entry_points([str(archive)])
    assert [(c.name, c.value, c.dist, c.version) for c in found] == [("zipped", "zp_mod:app", "zp", "1.0")]
    sys.path.insert(0, str(archive))
    try:
        assert found[0].load() == "the zipped app"
    finally:
        sys.path.remove(str(archive))
        sys.modules.pop("zp_mod", None)


def test_load_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "valmod.py").write_text("class Holder:\n    app = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins._load_value("valmod:Holder.app") == 42
    assert plugins._load_value("valmod:Holder.app [extra]") == 42
    with pytest.raises(ValueError, match="malformed"):
        plugins._load_value("not a value!")


def test_command_names_of_the_real_app() -> None:
    from swiftdeploy.cli.app import app

    assert {"schema", "plugins"} <= plugins.command_names(app)


def test_command_names_groups_and_renamed_commands() -> None:
    app = typer.Typer()
    sub = typer.Typer()

    @app.command()
    def do_thing() -> None: ...

    @app.command("renamed")
    def other() -> None: ...

    @sub.command()
    def inner() -> None: ...

    app.add_typer(sub, name="group")
    merged = typer.Typer()

    @merged.command()
    def flat() -> None: ...

    app.add_typer(merged)  # nameless: its commands join the parent
    assert plugins.command_names(app) == {"do-thing", "renamed", "group", "flat"}


def test_loading_with_switch_off_touches_nothing() -> None:
    app = typer.Typer()
    assert plugins.load_plugins(app, {"SWIFTDEPLOY_PLUGINS": "0"}) == []
    assert app.registered_groups == []
