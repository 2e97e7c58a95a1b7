"""Plugins: command groups from other distributions, found through the entry-point group `swiftdeploy.plugins`.

Each entry point names a `typer.Typer` app (`hello = swiftdeploy_hello:app`); it becomes the sub-command group
`swiftdeploy hello`. Every plugin loads on its own: one that fails to import, or names something that is not a Typer
app, or wants the name of a built-in command, is reported (`PluginStatus`) and skipped; the CLI keeps working.

`SWIFTDEPLOY_PLUGINS` selects: unset/empty/`1`/`all` = every plugin, `0`/`none`/`off` = none (nothing is scanned or
imported), `a,b` = only those names (the others are listed as disabled and never imported).

Start-up cost: `importlib.metadata` alone costs ~30 ms to import (the email parser, zipfile, csv), so discovery reads
the dist-info folders on sys.path itself (`scan`) and falls back to importlib.metadata only for what it cannot judge
(a zip archive or an .egg on sys.path).

Library code: nothing here prints. `swiftdeploy.cli` turns the statuses into warning lines.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import typer

GROUP = "swiftdeploy.plugins"
ENV_VAR = "SWIFTDEPLOY_PLUGINS"
DISABLE_HINT = f"run with {ENV_VAR}=0 to disable plugins"

_ALL = {"", "1", "all", "true", "yes", "on"}
_NONE = {"0", "none", "false", "no", "off"}
# A plugin's name becomes a command name: keep it to what a shell user can type without quoting.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

Status = Literal["loaded", "failed", "refused", "disabled", "not-installed"]


@dataclass(frozen=True)
class PluginStatus:
    """What happened to one plugin. `warning` is the one line the CLI prints (None when all is well)."""

    name: str
    status: Status
    value: str | None = None  # "pkg.module:attr"
    dist: str | None = None
    version: str | None = None
    error: str | None = None

    @property
    def origin(self) -> str:
        where = self.value or "?"
        return f"{where} ({self.dist} {self.version})" if self.dist else where

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.dist} {self.version})" if self.dist else f"plugin {self.name!r}"

    @property
    def warning(self) -> str | None:
        if self.status == "failed":
            return f"{self.label} failed to load: {self.error}; {DISABLE_HINT}"
        if self.status == "refused":
            return f"{self.label} refused: {self.error}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "origin": self.origin}


@dataclass(frozen=True)
class Selection:
    """The parsed SWIFTDEPLOY_PLUGINS setting."""

    raw: str | None
    enabled: bool
    allow: frozenset[str] | None  # None = every plugin

    def allows(self, name: str) -> bool:
        return self.enabled and (self.allow is None or name in self.allow)


def selection(environ: Mapping[str, str] | None = None) -> Selection:
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    value = (raw or "").strip()
    if value.lower() in _ALL:
        return Selection(raw, True, None)
    if value.lower() in _NONE:
        return Selection(raw, False, frozenset())
    return Selection(raw, True, frozenset(n.strip() for n in value.split(",") if n.strip()))


class Candidate:
    """One entry point of the group: its name, value (`pkg.module:attr`), distribution, and how to load it."""

    __slots__ = ("name", "value", "dist", "version", "_loader")

    def __init__(self, name: str, value: str, dist: str | None, version: str | None, loader: Any) -> None:
        self.name, self.value, self.dist, self.version, self._loader = name, value, dist, version, loader

    def load(self) -> Any:
        return self._loader()


def entry_points(paths: Iterable[str] | None = None) -> list[Candidate]:
    """Every installed entry point of the group; per distribution the first on `paths` (default sys.path) wins."""
    found = scan(paths)
    if found is not None:
        return found
    from importlib.metadata import distributions  # the slow, general path (zip archives, eggs)

    seen: set[str] = set()
    candidates = []
    for dist in distributions() if paths is None else distributions(path=list(paths)):
        key = re.sub(r"[-_.]+", "_", dist.metadata["Name"] or "").lower()
        if key in seen:
            continue
        seen.add(key)
        for ep in dist.entry_points:
            if ep.group == GROUP:
                candidates.append(Candidate(ep.name, ep.value, dist.metadata["Name"], dist.version, ep.load))
    return candidates


def scan(paths: Iterable[str] | None = None) -> list[Candidate] | None:
    """Discovery without importlib.metadata (~30 ms to import): read the dist-info/egg-info folders directly.

    Returns None when something on the path needs importlib.metadata to judge (a zip archive, an .egg).
    """
    needle = GROUP.encode()
    seen: set[str] = set()
    found: list[Candidate] = []
    for entry in sys.path if paths is None else paths:
        try:
            with os.scandir(entry or ".") as listing:
                items = sorted((item.name, item.path) for item in listing)
        except NotADirectoryError:
            return None  # a zip archive on sys.path
        except OSError:
            continue  # missing folders are common on sys.path (python311.zip)
        for name, path in items:
            if name.endswith(".egg"):
                return None
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            key = re.sub(r"[-_.]+", "_", name.rsplit(".", 1)[0].split("-")[0]).lower()
            if key in seen:
                continue  # shadowed by the same distribution earlier on sys.path, as for imports
            seen.add(key)
            try:
                with open(os.path.join(path, "entry_points.txt"), "rb") as fh:
                    raw = fh.read()
            except OSError:
                continue
            if needle not in raw:
                continue
            dist, version = _dist_meta(path)
            for ep_name, value in _group_entries(raw.decode("utf-8", "replace")):
                found.append(Candidate(ep_name, value, dist, version, functools.partial(_load_value, value)))
    return found


def _group_entries(text: str) -> list[tuple[str, str]]:
    """`name = value` lines of the [swiftdeploy.plugins] section of an entry_points.txt."""
    entries, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == GROUP and "=" in line:
            name, value = line.split("=", 1)
            entries.append((name.strip(), value.strip()))
    return entries


def _dist_meta(path: str) -> tuple[str | None, str | None]:
    """Name and Version from the METADATA (PKG-INFO for egg-info) header block, without the email parser."""
    fields: dict[str, str] = {}
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(path, meta), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        break  # end of the headers
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version"):
                        fields.setdefault(key, value.strip())
            break
        except OSError:
            continue
    return fields.get("Name"), fields.get("Version")


_VALUE_RE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


def _load_value(value: str) -> Any:
    """Import `pkg.module:attr.sub` the way importlib.metadata.EntryPoint.load does."""
    match = _VALUE_RE.match(value)
    if not match:
        raise ValueError(f"malformed entry point value {value!r}; use 'package.module:attribute'")
    obj = importlib.import_module(match["module"])
    for part in (match["attr"] or "").split("."):
        if part:
            obj = getattr(obj, part)
    return obj


def command_names(app: typer.Typer) -> set[str]:
    """Names of the commands and groups registered on a Typer app (what a plugin may not take)."""
    from typer.main import get_command_name, solve_typer_info_defaults

    names: set[str] = set()
    for command in app.registered_commands:
        if command.name:
            names.add(command.name)
        elif command.callback is not None:
            names.add(get_command_name(command.callback.__name__))
    for group in app.registered_groups:
        name = solve_typer_info_defaults(group).name
        if name:
            names.add(name)
        elif group.typer_instance is not None:  # a nameless group merges its commands into the parent
            names |= command_names(group.typer_instance)
    return names


def load_plugins(app: typer.Typer, environ: Mapping[str, str] | None = None) -> list[PluginStatus]:
    """Add every selected plugin to `app` as a sub-command group; return one status per plugin (sorted by name).

    Never raises for a plugin's fault: import errors, a wrong object and name clashes become statuses.
    """
    chosen = selection(environ)
    if not chosen.enabled:
        return []
    import typer

    reserved = command_names(app)
    taken: dict[str, str] = {}  # plugin name -> dist that got it
    statuses: list[PluginStatus] = []
    seen: set[str] = set()
    for ep in sorted(entry_points(), key=lambda e: e.name):
        base = {"name": ep.name, "value": ep.value, "dist": ep.dist, "version": ep.version}
        seen.add(ep.name)
        if not chosen.allows(ep.name):
            statuses.append(PluginStatus(status="disabled", error=f"not listed in {ENV_VAR}", **base))
            continue
        refusal = _refusal(ep.name, reserved, taken)
        if refusal:
            statuses.append(PluginStatus(status="refused", error=refusal, **base))
            continue
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:  # a plugin's import must never take the CLI down
            statuses.append(PluginStatus(status="failed", error=_one_line(exc), **base))
            continue
        if not isinstance(obj, typer.Typer):
            kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
            error = f"TypeError: {ep.value} is a {kind}, not a typer.Typer app"
            statuses.append(PluginStatus(status="failed", error=error, **base))
            continue
        app.add_typer(obj, name=ep.name)
        taken[ep.name] = base["dist"] or ep.value
        statuses.append(PluginStatus(status="loaded", **base))
    if chosen.allow:
        for name in sorted(chosen.allow - seen):
            statuses.append(PluginStatus(name=name, status="not-installed", error=f"named in {ENV_VAR}"))
    return statuses


def _refusal(name: str, reserved: set[str], taken: dict[str, str]) -> str | None:
    if not _NAME_RE.fullmatch(name):
        return "the entry-point name must be lowercase letters, digits, - and _ (it becomes the command name)"
    if name in reserved:
        return f"the name clashes with the built-in command {name!r}; rename the entry point"
    if name in taken:
        return f"the name is already taken by the plugin from {taken[name]}; uninstall one of them"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def manifest_path(ctx: Any) -> Path:
    """For plugin commands: the manifest path chosen by the global `--manifest/-m` option (a `typer.Context`)."""
    root = ctx.find_root()
    return Path((root.obj or {}).get("manifest", "manifest.yaml"))


# The statuses of the plugins loaded into the running CLI (set by swiftdeploy.cli; read by `swiftdeploy plugins`).
_loaded: list[PluginStatus] | None = None


def remember(statuses: list[PluginStatus]) -> None:
    global _loaded
    _loaded = list(statuses)


def loaded() -> list[PluginStatus] | None:
    """Statuses of this process's plugin load, or None when the CLI has not loaded plugins."""
    return _loaded
