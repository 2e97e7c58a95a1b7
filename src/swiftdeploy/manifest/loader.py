"""Load manifest.yaml through ruamel.yaml so every error can name file:line:column, the field path, and the
nearest valid key for a typo.

Parsing is bounded before anything is built (docs/manifest.md#limits): the file must be a regular file of at most
MAX_BYTES (read with `fsutil.read_bounded`, so a FIFO or /dev/zero is refused at once), and the YAML event stream
is checked before ruamel composes a single node: no anchors or aliases (a few hundred bytes of nested aliases
expand to gigabytes), no tags (`!!binary`, `!!set`, `!custom`), at most MAX_NODES nodes nested at most MAX_DEPTH
deep. A validation error lists at most MAX_PROBLEMS problems, each cut to MAX_PROBLEM_CHARS."""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ManifestError
from ..fsutil import Refused, read_bounded
from .model import Manifest
from .paths import check_paths

MAX_BYTES = 64 * 1024  # the example manifest, every field commented, is under 7 KiB
MAX_NODES = 5000  # scalars, mappings and sequences together
MAX_DEPTH = 32  # nested mappings/sequences
MAX_PROBLEMS = 20  # problems listed; the rest are counted
MAX_PROBLEM_CHARS = 300


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file. Raises ManifestError (exit 2) with every problem found."""
    path = Path(path)
    try:
        raw = read_bounded(path, MAX_BYTES, what="manifest")
    except Refused as exc:
        raise ManifestError(str(exc), hint="pass the manifest.yaml file with --manifest/-m PATH") from None
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: manifest not found",
            hint="write a commented starter with `swiftdeploy new`, or pass --manifest/-m PATH",
        ) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte order mark is allowed at the start
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: manifest is not UTF-8 (byte {exc.start})", hint="save it as UTF-8") from None
    manifest = parse_manifest(text, source=str(path)).with_source(path.resolve(), hashlib.sha256(raw).hexdigest())
    check_paths(manifest)
    return manifest


def parse_yaml(text: str, source: str = "manifest.yaml") -> Any:
    """Parse YAML text into ruamel's round-trip nodes (which remember line and column)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        check_events(text, source)
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(f"{where}: YAML syntax error: {problem}", hint="fix the YAML syntax") from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:  # e.g. bad escapes, deep nesting
        raise ManifestError(f"{source}: YAML error: {' '.join(str(exc).split())[:MAX_PROBLEM_CHARS]}") from None


def check_events(text: str, source: str = "manifest.yaml") -> None:
    """Refuse anchors, aliases, tags, more than MAX_NODES nodes or nesting deeper than MAX_DEPTH, from the event
    stream (nothing composed or expanded yet). Raises ManifestError naming the line and column."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent

    depth = nodes = 0
    for event in YAML(typ="rt").parse(text):
        if not isinstance(event, NodeEvent | CollectionEndEvent):
            continue
        mark = event.start_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}"
        if isinstance(event, AliasEvent):
            raise ManifestError(
                f"{where}: YAML alias *{event.anchor} is not allowed in a manifest", hint="write the value out"
            )
        if getattr(event, "anchor", None) is not None:
            raise ManifestError(
                f"{where}: YAML anchor &{event.anchor} is not allowed in a manifest",
                hint="remove the anchor and write each value out",
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise ManifestError(
                f"{where}: YAML tag {str(tag)[:60]} is not allowed in a manifest",
                hint="remove the tag (quote the value if it is a string)",
            )
        if isinstance(event, CollectionEndEvent):
            depth -= 1
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise ManifestError(f"{where}: the manifest has more than {MAX_NODES} YAML nodes (values, lists, maps)")
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ManifestError(f"{where}: the manifest nests mappings and lists more than {MAX_DEPTH} deep")


def parse_manifest(text: str, source: str = "manifest.yaml") -> Manifest:
    """Validate manifest text. Raises ManifestError listing every problem with its location."""
    data = parse_yaml(text, source)
    if data is None:
        raise ManifestError(f"{source}: manifest is empty", hint="at least `services: {image: ..., port: ...}`")
    if not isinstance(data, dict):
        raise ManifestError(f"{source}:1:1: manifest must be a mapping of sections (services, nginx, ...)")
    try:
        return Manifest.model_validate(_plain(data))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = [_cut(_describe(err, data, source)) for err in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"... and {len(errors) - MAX_PROBLEMS} more")
        noun = "problem" if len(errors) == 1 else "problems"
        raise ManifestError(f"{source}: invalid manifest ({len(errors)} {noun})", problems=problems) from None


def _cut(line: str) -> str:
    return line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 3] + "..."


def _plain(node: Any) -> Any:
    """ruamel nodes -> plain Python (keys kept as they are; pydantic reports non-string keys)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)  # ruamel scalar string subclasses -> str
    return node


def _describe(err: dict[str, Any], data: Any, source: str) -> str:
    loc = tuple(err.get("loc", ()))
    # An unknown or missing key is reported at the key; a bad value at the value itself.
    line, col = _position(data, loc, at_key=err.get("type") in ("extra_forbidden", "missing"))
    where = f"{source}:{line}:{col}" if line else source
    path = ".".join(str(p) for p in loc) or "(top level)"
    message = err.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
        suggestion = _nearest_key(loc)
        if suggestion:
            message += f"; did you mean `{suggestion}`?"
        else:
            message += f"; valid fields here: {', '.join(_fields_at(loc[:-1]) or ['(none)'])}"
    elif err.get("type") == "missing":
        message = "required field is missing"
    elif err.get("type") in ("int_type", "float_type") and isinstance(err.get("input"), bool):
        kind = "an integer" if err["type"] == "int_type" else "a number"
        message = f"must be {kind}, not {str(err['input']).lower()}"
    elif err.get("type") == "finite_number":
        message = "must be a finite number (not .inf or .nan, and not so large that it overflows, like 1e400)"
    elif _quoted_scalar(err):
        kind = {"bool_type": "true or false", "int_type": "an integer"}.get(err["type"], "a number")
        message = f"must be {kind}, not the string {_quoted(err['input'])}: remove the quotes"
    return f"{where}: {path}: {message}"


def _quoted_scalar(err: dict[str, Any]) -> bool:
    """A number or boolean written in quotes (`port: "8080"`): strict fields refuse the string."""
    value = err.get("input")
    if not isinstance(value, str) or err.get("type") not in ("int_type", "float_type", "bool_type"):
        return False
    if err["type"] == "bool_type":
        return value.strip().lower() in ("true", "false")
    try:
        float(value)
    except ValueError:
        return False
    return True


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '\\"') + '"'


def _position(data: Any, loc: tuple[Any, ...], at_key: bool = True) -> tuple[int | None, int | None]:
    """Best line/column (1-based) for a pydantic error location, walking ruamel's line/col records."""
    node, line, col = data, 1, 1
    for index, key in enumerate(loc):
        last = index == len(loc) - 1
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict) and key in node:
                if lc is not None:
                    kline, kcol = lc.key(key) if last and at_key else lc.value(key)
                    line, col = kline + 1, kcol + 1
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                if lc is not None:
                    iline, icol = lc.item(key)
                    line, col = iline + 1, icol + 1
                node = node[key]
            else:
                break
        except (KeyError, TypeError, IndexError, AttributeError):
            break
    return line, col


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Manifest
    for key in loc:
        field = model.model_fields.get(key) if model and isinstance(key, str) else None
        if field is None:
            return None
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    return sorted(model.model_fields) if model else []


def _nearest_key(loc: tuple[Any, ...]) -> str | None:
    if not loc or not isinstance(loc[-1], str):
        return None
    matches = difflib.get_close_matches(loc[-1], _fields_at(loc[:-1]), n=1, cutoff=0.6)
    return matches[0] if matches else None
