"""Where the policies come from, the data they see, and the bundle the OPA service loads.

One `PolicySet` feeds both engines and `render_bundle`, so what OPA serves is exactly what the embedded engine
evaluates. Sources, in order: the manifest's `policy.dir` (relative to the manifest), else the default policies
shipped in the wheel (`swiftdeploy/policy/bundled`, force-included from the repo's `policies/`), else - in an
editable install - the repo's `policies/` folder itself.

The bundle (`policy-bundle/`, loaded with `opa run --bundle`) adds two files to the decision modules and data:
- `system/authz.rego`, OPA's authorization policy (`--authorization=basic`): only the requests swiftdeploy makes
  are allowed (`GET /health`, `POST /v1/data/swiftdeploy/<domain>/decision`), every write and every other read is
  refused. Nobody who can reach OPA's port can replace the policy that decides.
- `.manifest` with the bundle's `revision` (a digest of every other file): OPA reports it with each decision
  (`?provenance=true`) and the client refuses a decision made by any other revision (a stale or foreign bundle).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PolicyError
from ..fsutil import Refused, read_bounded

if TYPE_CHECKING:
    from ..manifest import Manifest

BUNDLE_DIR = "policy-bundle"
DATA_FILE = "data.json"
AUTHZ_FILE = "system/authz.rego"
BUNDLE_MANIFEST = ".manifest"
# Bounds of a policies folder walk (docs/manifest.md#limits): `policy.dir: /proc/self` or a link loop stops here.
MAX_POLICY_DEPTH = 8  # nested folders
MAX_POLICY_ENTRIES = 1000  # files and folders looked at
MAX_POLICY_FILE_BYTES = 1024 * 1024  # one .rego module or data.json
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
        try:  # allow_nan=False: OPA cannot load Infinity or NaN (the manifest refuses them; this is the belt)
            return json.dumps(self.data, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except ValueError as exc:
            raise PolicyError(
                f"the policy data of {self.origin} holds a number JSON cannot carry ({exc})",
                hint="use finite numbers only in data.json and policy.thresholds",
            ) from None

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
    modules = dict(_read_modules(source, "", _Budget()))
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
    """The files of policy-bundle/ (relative to the output folder): see bundle_files. Pure."""
    return {f"{BUNDLE_DIR}/{path}": text for path, text in bundle_files(policy_set).items()}


def bundle_files(policy_set: PolicySet) -> dict[str, str]:
    """The bundle exactly as evaluated: the decision modules (no tests), the merged data.json, the authorization
    policy, and the .manifest naming the revision of all of them."""
    for path, text in policy_set.policies.items():
        if re.search(r"^package\s+system\b", text, re.MULTILINE):
            raise PolicyError(
                f"policy {path} in {policy_set.origin} declares a `system` package, which OPA reserves for its own "
                "configuration (swiftdeploy generates system.authz)",
                hint="rename the package (decisions live under package swiftdeploy.<domain>)",
            )
    files = {path: _with_newline(text) for path, text in sorted(policy_set.policies.items())}
    files[DATA_FILE] = policy_set.data_json()
    files[AUTHZ_FILE] = authz_policy()
    files[BUNDLE_MANIFEST] = json.dumps({"revision": bundle_revision(files)}) + "\n"
    return files


def bundle_revision(files: dict[str, str]) -> str:
    """A digest of the bundle's files (its .manifest excluded): what OPA reports as the bundle's revision."""
    digest = hashlib.sha256()
    for path, text in sorted(files.items()):
        if path.rsplit("/", 1)[-1] != BUNDLE_MANIFEST:
            digest.update(f"\0{path}\0{text}".encode())
    return digest.hexdigest()[:20]


def expected_revision(m: Manifest) -> str:
    """The revision of the bundle `m` generates (what its OPA must be serving)."""
    return bundle_revision(bundle_files(load_policy_set(m)))


def authz_policy() -> str:
    """OPA's `system.authz` (--authorization=basic): allow exactly the requests swiftdeploy sends."""
    from .decision import DOMAINS

    domains = ", ".join(f'"{d}"' for d in sorted(DOMAINS))
    return f"""\
# Generated by swiftdeploy (policy/bundle.py): OPA's authorization policy, enforced by
# `opa run --authorization=basic`. It allows only what swiftdeploy asks - GET /health, and
# POST /v1/data/swiftdeploy/<domain>/decision with no query parameters but provenance=true and
# strict-builtin-errors=true - and refuses
# everything else (HTTP 401): every write (PUT/PATCH/DELETE on /v1/policies and /v1/data) and every other read.
package system.authz

import rego.v1

default allow := false

allow if {{
	input.method == "GET"
	input.path == ["health"]
	count(object.get(input, "params", {{}})) == 0
}}

allow if {{
	input.method == "POST"
	some domain in {{{domains}}}
	input.path == ["v1", "data", "swiftdeploy", domain, "decision"]
	known_params
}}

# Each query parameter is one swiftdeploy sends, with the value it sends (explain, metrics, instrument: refused).
known_params if {{
	every name, values in object.get(input, "params", {{}}) {{
		name in {{"provenance", "strict-builtin-errors"}}
		values == ["true"]
	}}
}}
"""


class _Budget:
    """Entries a policies-folder walk may still look at."""

    def __init__(self) -> None:
        self.entries = MAX_POLICY_ENTRIES


def _read_modules(folder: Traversable, prefix: str, budget: _Budget):
    if prefix.count("/") >= MAX_POLICY_DEPTH:
        raise PolicyError(
            f"{folder}: policies folder nested more than {MAX_POLICY_DEPTH} deep (a folder link loop?)",
            hint="keep policies in a shallow folder of .rego files, or remove policy.dir",
        )
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        budget.entries -= 1
        if budget.entries < 0:
            raise PolicyError(
                f"{folder}: more than {MAX_POLICY_ENTRIES} files and folders in the policies folder",
                hint="point policy.dir at a folder holding only your policies",
            )
        if entry.name.startswith((".", "_")):
            continue
        if isinstance(entry, Path) and entry.is_symlink():
            raise PolicyError(
                f"{entry}: a symbolic link in the policies folder; swiftdeploy follows no link in the project",
                hint="copy the file or folder in instead of linking it",
            )
        if entry.is_dir():
            yield from _read_modules(entry, f"{prefix}{entry.name}/", budget)
        elif entry.name.endswith(".rego"):
            yield f"{prefix}{entry.name}", _with_newline(_read_text(entry))


def _read_text(entry: Traversable) -> str:
    """A policy file's text: a regular file of at most MAX_POLICY_FILE_BYTES (a FIFO never blocks the read)."""
    try:
        if isinstance(entry, Path):
            return read_bounded(entry, MAX_POLICY_FILE_BYTES, what="policy file").decode("utf-8")
        return entry.read_text(encoding="utf-8")
    except Refused as exc:
        raise PolicyError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{entry}: not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise PolicyError(f"{entry}: cannot read: {exc.strerror or exc}") from None


def _read_data(path: Traversable) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity (_no_constant), nesting deeper than Python's stack
        raise PolicyError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the data document must be a JSON object")
    return copy.deepcopy(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number OPA can load; use a finite number")


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
