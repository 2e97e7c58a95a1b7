"""Load manifest.yaml through ruamel.yaml so every error can name file:line:column, the field path, and the
nearest valid key for a typo."""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ManifestError
from .model import Manifest


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file. Raises ManifestError (exit 2) with every problem found."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: manifest not found",
            hint="write a commented starter with `swiftdeploy new`, or pass --manifest/-m PATH",
        ) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: manifest is not UTF-8 (byte {exc.start})", hint="save it as UTF-8") from None
    manifest = parse_manifest(text, source=str(path))
    return manifest.with_source(path.resolve(), hashlib.sha256(raw).hexdigest())


def parse_yaml(text: str, source: str = "manifest.yaml") -> Any:
    """Parse YAML text into ruamel's round-trip nodes (which remember line and column)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(f"{where}: YAML syntax error: {problem}", hint="fix the YAML syntax") from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:  # e.g. bad escapes, deep nesting
        raise ManifestError(f"{source}: YAML error: {exc}") from None


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
        problems = [_describe(err, data, source) for err in exc.errors(include_url=False)]
        noun = "problem" if len(problems) == 1 else "problems"
        raise ManifestError(f"{source}: invalid manifest ({len(problems)} {noun})", problems=problems) from None


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
