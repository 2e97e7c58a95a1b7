"""OPA as a supervised service of the local runtime, beside the apps and nginx (three services, as on docker).

With `policy.engine: opa`, or `auto` when an OPA binary is found (policy/server.py: `opa.binary`, else PATH, else
the project's .tools/bin/opa), `deploy` starts `opa run --server` on 127.0.0.1:<opa.port> with the generated
`policy-bundle/` and its authorization policy, and waits for `/health` before the first gate. Like the apps it runs
in its own session under a pid file (`pids/opa.json`, log `logs/opa.log`), so `teardown` stops it with the rest.

The pid file's spec is a digest of the command line and the bundle's revision: a deploy whose bundle changed (a
threshold override, your own policies) restarts OPA on the new bundle before the gate asks it, and the client
refuses a decision from any other revision anyway (policy/opa.py). No `--watch` here: a restart is atomic, a file
watcher can see a half-written bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import TYPE_CHECKING

from ..errors import OperationFailed, PolicyEngineUnavailable
from . import procs
from .base import Progress, _noop

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .local import LocalRuntime

SERVICE = "opa"  # the compose service's name too (render/compose.py OPA_SERVICE)


def health_url(m: Manifest) -> str:
    return f"http://127.0.0.1:{m.opa.port}/health"


def argv(binary: str, m: Manifest) -> list[str]:
    from ..policy.bundle import BUNDLE_DIR
    from ..policy.server import server_args

    return [binary, *server_args(f"127.0.0.1:{m.opa.port}", str(m.out_dir / BUNDLE_DIR))]


def start(runtime: LocalRuntime, m: Manifest, *, timeout: float = 30.0, progress: Progress = _noop) -> None:
    """Start (or keep, or restart on a changed bundle) the stack's OPA and wait until it answers /health.
    Engine `embedded`: nothing. `auto` without an OPA binary: says once that the embedded engine decides.
    No binary for `opa`, or an OPA that exits or never answers (a bundle it refuses): PolicyEngineUnavailable
    (exit 4) with OPA's own message."""
    from ..policy.bundle import expected_revision
    from ..policy.server import TOOLS_OPA, find_binary
    from ..render.compose import includes_opa

    if not includes_opa(m):
        return
    binary = find_binary(m)
    if binary is None:
        looked = f"opa.binary is not set, no `opa` on PATH, no {TOOLS_OPA}"
        if m.policy.engine == "opa":
            raise PolicyEngineUnavailable(
                f"policy.engine is opa but there is no OPA binary to run ({looked})",
                hint="run `make opa` in the swiftdeploy checkout (needs Go), set opa.binary in the manifest, "
                "or set policy.engine: embedded",
            )
        progress(f"no OPA binary ({looked}): the embedded engine decides (policy.engine auto)")
        return
    command = argv(binary, m)
    spec = hashlib.sha256(json.dumps([command, expected_revision(m)]).encode()).hexdigest()[:16]
    pid_file = runtime.pid_path(m, SERVICE)
    current = runtime.running(m, SERVICE)
    if current is not None and current.spec == spec:
        progress(f"opa already running (pid {current.pid}) with this bundle")
        rec = current
    else:
        if current is not None:
            progress(f"restarting opa (pid {current.pid}): the policy bundle changed")
            procs.stop(current, grace=runtime.grace)
            pid_file.unlink(missing_ok=True)
        if not procs.port_free(m.opa.port) and not runtime._reclaim_port(m, m.opa.port):  # our orphan: stopped
            raise OperationFailed(
                procs.describe_port_in_use(m.opa.port, "opa.port"),
                hint="stop that program or change opa.port in the manifest (swiftdeploy asks only its own OPA)",
            )
        progress(f"starting opa on 127.0.0.1:{m.opa.port} ({binary})")
        m.state_dir.mkdir(parents=True, exist_ok=True)
        rec = procs.start(
            SERVICE,
            command,
            env=dict(os.environ),
            cwd=m.state_dir,
            log_path=runtime.log_path(m, SERVICE),
            pid_path=pid_file,
            port=m.opa.port,
            spec=spec,
        )
    try:
        _wait(m, rec, timeout)
    except BaseException:
        procs.stop(rec, grace=runtime.grace)
        pid_file.unlink(missing_ok=True)
        raise


def _wait(m: Manifest, rec: procs.ProcRecord, timeout: float) -> None:
    from ..policy.opa import OpaEngine, opa_url

    deadline = time.monotonic() + timeout
    with OpaEngine(opa_url(m.opa.port), timeout=m.opa.timeout) as opa:
        while True:
            if not procs.is_running(rec):
                code = procs.exit_code(rec)
                raise PolicyEngineUnavailable(
                    "OPA refused to start"
                    + (f" (exit code {code})" if code is not None else "")
                    + ": "
                    + (own_message(rec.log) or "no output"),
                    hint=f"see {rec.log}; a bundle OPA cannot compile is refused here before any gate asks it",
                )
            try:
                opa.health()
                return
            except PolicyEngineUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise PolicyEngineUnavailable(
                        f"OPA (pid {rec.pid}) did not answer /health within {timeout:g} s: {exc.message}",
                        hint=f"see {rec.log}",
                    ) from None
            time.sleep(0.1)


def own_message(log: str, n: int = 12) -> str:
    """OPA's last words from its log: the lines after swiftdeploy's last start marker (its JSON log lines and its
    plain `error: ...` exit message), joined."""
    lines = procs.tail(log, 200)
    starts = [i for i, line in enumerate(lines) if line.startswith("--- ")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    errors = [line for line in lines if not line.startswith("{")] or lines
    return "\n  ".join(line.rstrip() for line in errors[-n:] if line.strip())
