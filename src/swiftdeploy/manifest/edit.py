"""Round-trip edits of manifest.yaml: the person's comments, key order, quotes and flow style survive.

`promote` and `rollback` change a few values (services.mode, services.image, services.version). The edited text
is validated with the same loader as a normal load BEFORE it replaces the file, so an edit can never leave an
invalid manifest behind, and it is written atomically.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ManifestError, OperationFailed
from ..fsutil import atomic_write
from .loader import check_events, parse_manifest

KeyPath = tuple[str, ...]


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a person's long lines
    return yaml


def edit_text(text: str, values: Mapping[KeyPath, Any], *, source: str = "manifest.yaml") -> str:
    """Return `text` with each key path set to its value (missing sections and keys are added at the end)."""
    from ruamel.yaml.comments import CommentedMap

    check_events(text, source)  # no alias or tag is ever expanded, even in a file changed since it was loaded
    yaml = _yaml()
    data = yaml.load(text)
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: manifest must be a mapping of sections (services, nginx, ...)")
    for path, value in values.items():
        if not path:
            raise ValueError("empty key path")
        node = data
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = CommentedMap()
                # A new section inside a flow-style parent stays flow-style so the file keeps its look.
                if getattr(node, "fa", None) is not None and node.fa.flow_style():
                    child.fa.set_flow_style()
                node[key] = child
            elif not isinstance(child, dict):
                raise ManifestError(f"{source}: {'.'.join(path[:-1])} is not a mapping; cannot set {'.'.join(path)}")
            node = child
        node[path[-1]] = _flow_list(value) if isinstance(value, list) else value
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _flow_list(values: list[Any]) -> Any:
    """A list written as a one-line flow sequence (`[python3, -m, app]`), like the manifest's own commands."""
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(values)
    seq.fa.set_flow_style()
    return seq


def set_values(path: Path, values: Mapping[KeyPath, Any], *, expect_sha256: str | None = None) -> tuple[str, str]:
    """Edit the manifest file in place. Returns (old_text, new_text) so a caller can restore the old text.

    `expect_sha256` (the sha of the manifest the operation loaded) refuses the edit when someone changed the file
    in the meantime, instead of silently overwriting their change.
    """
    path = Path(path)
    raw = path.read_bytes()
    if expect_sha256 is not None and hashlib.sha256(raw).hexdigest() != expect_sha256:
        raise OperationFailed(
            f"{path} changed while this operation ran; nothing was edited",
            hint="re-run the command so it works on the current manifest",
        )
    old = raw.decode("utf-8")
    new = edit_text(old, values, source=str(path))
    parse_manifest(new, source=str(path))  # raises ManifestError: the edit is refused, the file untouched
    if new != old:
        atomic_write(path, new, mode=_mode_of(path))
    return old, new


def restore(path: Path, text: str) -> None:
    """Put back the text `set_values` returned as old_text (used when a later step of an operation fails)."""
    atomic_write(Path(path), text, mode=_mode_of(Path(path)))


def _mode_of(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644
