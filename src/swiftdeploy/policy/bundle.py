"""Where the policies come from, the data they see, and the bundle the OPA service mounts.

One `PolicySet` feeds both engines and `render_bundle`, so what OPA serves is exactly what the embedded engine
evaluates. Sources, in order: the manifest's `policy.dir` (relative to the manifest), else the default policies
shipped in the wheel (`swiftdeploy/policy/bundled`, force-included from the repo's `policies/`), else - in an
editable install - the repo's `policies/` folder itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PolicyError

if TYPE_CHECKING:
    from ..manifest import Manifest

BUNDLE_DIR = "policy-bundle"
DATA_FILE = "data.json"
# Repo root of an editable install: src/swiftdeploy/policy/bundle.py -> parents[3].
_REPO_POLICIES = Path(__file__).resolve().parents[3] / "policies"


@dataclass(frozen=True)
class PolicySet:
    origin: str  # where the files came from, for messages
    modules: dict[str, str]  # relative path -> Rego text (tests included)
    data: dict[str, Any] = field(default_factory=dict)  # data document, thresholds merged

    @property
    def policies(self) -> dict[str, str]:
        """The modules that decide (test files excluded)."""
        return {p: t for p, t in self.modules.items() if not is_test_file(p)}

    @property
    def thresholds(self) -> dict[str, Any]:
        return self.data.get("swiftdeploy", {}).get("thresholds", {})

    def data_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"

    def fingerprint(self, *, tests: bool) -> str:
        digest = hashlib.sha256(self.data_json().encode())
        for path, text in sorted((self.modules if tests else self.policies).items()):
            digest.update(f"\0{path}\0{text}".encode())
        return digest.hexdigest()


def is_test_file(path: str) -> bool:
    return path.endswith("_test.rego")


def default_source() -> Traversable:
    """The default policies: the wheel's bundled copy, else the repo's policies/ (editable install)."""
    bundled = resources.files("swiftdeploy.policy") / "bundled"
    if bundled.is_dir() and (bundled / DATA_FILE).is_file():
        return bundled
    if (_REPO_POLICIES / DATA_FILE).is_file():
        return _REPO_POLICIES
    raise PolicyError(
        "the default policies are missing from this installation (no swiftdeploy/policy/bundled)",
        hint="reinstall swiftdeploy, or set policy.dir in the manifest to your own policies folder",
    )


def policy_dir(m: Manifest) -> Path | None:
    """The manifest's own policies folder, or None for the defaults."""
    if not m.policy.dir:
        return None
    folder = (m.base_dir / m.policy.dir).resolve()
    if not folder.is_dir():
        raise PolicyError(
            f"policy.dir {m.policy.dir!r} is not a folder ({folder})",
            hint="point policy.dir at a folder of .rego files, relative to the manifest, or remove it",
        )
    return folder


def load_policy_set(m: Manifest | None = None, *, folder: Path | None = None) -> PolicySet:
    """Read every .rego module and data.json of the source, merging the manifest's threshold overrides."""
    source: Traversable = folder or (policy_dir(m) if m is not None else None) or default_source()
    modules = dict(_read_modules(source, ""))
    if not modules:
        raise PolicyError(f"no .rego files in {source}", hint="add policies, or remove policy.dir to use the defaults")
    data_file = source / DATA_FILE
    if not data_file.is_file():  # your own rules, the default thresholds
        data_file = default_source() / DATA_FILE
    data = _read_data(data_file)
    if m is not None:
        thresholds = data.setdefault("swiftdeploy", {}).setdefault("thresholds", {})
        if not isinstance(thresholds, dict):
            raise PolicyError(f"{data_file}: swiftdeploy.thresholds must be an object")
        thresholds.update(m.policy.thresholds.overrides())
    return PolicySet(origin=str(source), modules=modules, data=data)


def render_bundle(policy_set: PolicySet) -> dict[str, str]:
    """The files of policy-bundle/ exactly as evaluated: decision modules (no tests) + merged data.json. Pure."""
    files = {f"{BUNDLE_DIR}/{path}": _with_newline(text) for path, text in sorted(policy_set.policies.items())}
    files[f"{BUNDLE_DIR}/{DATA_FILE}"] = policy_set.data_json()
    return files


def _read_modules(folder: Traversable, prefix: str):
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            yield from _read_modules(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".rego"):
            yield f"{prefix}{entry.name}", _with_newline(entry.read_text(encoding="utf-8"))


def _read_data(path: Traversable) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the data document must be a JSON object")
    return copy.deepcopy(data)


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
