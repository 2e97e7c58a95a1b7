"""The OPA server as swiftdeploy runs it: which binary, and the one command line both runtimes start it with.

    opa run --server --addr=127.0.0.1:<opa.port> --authorization=basic --skip-version-check [--watch]
            --bundle <policy-bundle>

- `--bundle`: policies and data load as one bundle (policy/bundle.py), which OPA then owns: its data API refuses
  writes under it.
- `--authorization=basic`: every request is checked against the bundle's `system.authz` policy, which allows only
  `GET /health` and the decision queries swiftdeploy makes; every other read and every write is HTTP 401.
- `--addr=127.0.0.1:...`: the host's loopback only (the docker runtime runs OPA in the host's network namespace
  for that reason, render/compose.py). `--skip-version-check`: OPA never calls out to the internet.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..manifest import Manifest

# `make opa` installs the pinned OPA here (repo root of an editable install: src/swiftdeploy/policy -> parents[3]).
TOOLS_OPA = Path(__file__).resolve().parents[3] / ".tools" / "bin" / "opa"


def server_args(address: str, bundle: str, *, watch: bool = False) -> list[str]:
    """The arguments after the `opa` binary (the docker image's entrypoint is the binary)."""
    args = ["run", "--server", f"--addr={address}", "--authorization=basic", "--skip-version-check"]
    return [*args, *(["--watch"] if watch else []), "--bundle", bundle]


def find_binary(m: Manifest | None) -> str | None:
    """The OPA binary the local runtime runs: `opa.binary` (relative to the manifest), else `opa` on PATH, else the
    project's .tools/bin/opa; None when there is none. A set `opa.binary` that is not executable is an error."""
    if m is not None and m.opa.binary:
        path = (m.base_dir / Path(m.opa.binary).expanduser()).resolve()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise InvalidInput(
                f"opa.binary {m.opa.binary!r} is not an executable file ({path})",
                hint="point it at an OPA binary (`make opa` installs the pinned one at .tools/bin/opa), or remove it",
            )
        return str(path)
    found = shutil.which("opa")
    if found:
        return found
    if TOOLS_OPA.is_file() and os.access(TOOLS_OPA, os.X_OK):
        return str(TOOLS_OPA)
    return None
