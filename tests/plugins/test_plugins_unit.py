"""The pieces of plugin loading that need no subprocess: the switch parser, the pre-scan, name collection."""

from __future__ import annotations

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


def test_prescan(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    other = tmp_path / "other" / "tool-1.0.dist-info"
    other.mkdir(parents=True)
    (other / "entry_points.txt").write_text("[console_scripts]\ntool = tool:main\n")
    (tmp_path / "other" / "flat-1.0.egg-info").write_text("a PKG-INFO file, not a folder\n")
    empty.mkdir()
    assert not plugins.may_have_plugins([str(empty), str(tmp_path / "missing"), str(tmp_path / "other")])

    mine = tmp_path / "mine" / "p-1.0.dist-info"
    mine.mkdir(parents=True)
    (mine / "entry_points.txt").write_text("[swiftdeploy.plugins]\np = p:app\n")
    assert plugins.may_have_plugins([str(empty), str(tmp_path / "mine")])

    archive = tmp_path / "lib.zip"
    archive.write_bytes(b"PK")
    assert plugins.may_have_plugins([str(archive)])  # cannot judge a zip: let importlib.metadata look


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
