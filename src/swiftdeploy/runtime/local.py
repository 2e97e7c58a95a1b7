"""The local runtime: the docker topology as processes on 127.0.0.1.

- The app of each track: `services.command` (the canary: `canary.command`, else the same) or `python -m demo_api`,
  env MODE / APP_VERSION / APP_IMAGE / APP_PORT / APP_HOST=127.0.0.1. Ports are fixed (`local_app_ports`): stable
  on services.port or services.port+2, the canary on services.port+1 or +3; a taken port is an error naming its
  holder, never a random port. The port in use is recorded in the track's pid file (the truth for nginx and status).
- nginx in the foreground (`-g 'daemon off;'`) under our own Popen in its own session, with the LOCAL variant of
  the generated config (same builder: `render_nginx(m, NginxTarget.local(...))`) at <state>/nginx/nginx.conf.
  Config changes: write a candidate file, `nginx -t` it, rename it in place, SIGHUP the master (graceful reload).
- Restarting a running app (promotion, a changed version) is blue/green: the new process starts on the track's
  other port, nginx is switched to it, then the old one is stopped, so no public request is refused.
- OPA (policy.engine opa, or auto with an OPA binary): `opa run --server` on 127.0.0.1:<opa.port> with the
  generated bundle, started before the first gate of a deploy (runtime/opa_service.py).

State, all under m.state_dir: pids/<service>.json (pid, create time, argv, port), logs/<service>.log,
nginx/nginx.conf, nginx/tmp, logs/nginx-{error,access}.log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HealthTimeout, OperationFailed, RuntimeUnavailable
from ..fsutil import atomic_write
from ..localhttp import NoAnswer, get_text
from . import local_app_ports, procs
from .base import (
    LogLine,
    Progress,
    ServiceHealth,
    ServiceInfo,
    Track,
    _noop,
    expected_services,
    log_excerpt,
    role_of,
    service_of,
    wait_until_healthy,
)

if TYPE_CHECKING:
    from ..manifest import Manifest

NGINX = "nginx"
OPA = "opa"  # runtime/opa_service.py


def find_nginx() -> str:
    candidates = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
    found = shutil.which("nginx") or next((p for p in candidates if os.access(p, os.X_OK)), None)
    if not found:
        raise RuntimeUnavailable(
            "nginx is not installed (the local runtime runs the real nginx)",
            hint="install it (`sudo apt-get install -y nginx-light`) or use runtime: docker",
        )
    return found


def app_argv(m: Manifest, python: str | None = None, track: Track = "stable") -> list[str]:
    """A track's command: `services.command` (the canary: `canary.command`, else `services.command`), else the
    bundled demo API under `python` (default: this one)."""
    command = m.services.command if track == "stable" else m.canary_command
    return list(command) if command else [python or sys.executable, "-m", "demo_api"]


def preferred_port(m: Manifest, track: Track) -> int:
    """The port a track's app starts on when it is not running yet: services.port for stable, services.port + 1
    for the canary (`local_app_ports`; a restart moves it to the track's other port)."""
    return local_app_ports(m, track)[0]


def app_health_url(m: Manifest, port: int) -> str:
    return f"http://127.0.0.1:{port}{m.services.health_path}"


def _health_answer(url: str) -> tuple[bool, str]:
    """(healthy, detail) of one GET of a health URL: 200 is healthy; detail is the answer or why there was none."""
    try:
        status, body = get_text(url, timeout=2.0, limit=4096)
    except NoAnswer as exc:
        return False, str(exc)
    return status == 200, f"HTTP {status}: {body.strip()[:200]}"


class LocalRuntime:
    name = "local"

    def __init__(self, *, grace: float = 5.0, python: str | None = None) -> None:
        self.grace = grace
        self.python = python or sys.executable

    # --- paths and specs ---------------------------------------------------------------------------------------

    @staticmethod
    def pid_path(m: Manifest, service: str) -> Path:
        return m.state_dir / "pids" / f"{service}.json"

    @staticmethod
    def log_path(m: Manifest, service: str) -> Path:
        return m.state_dir / "logs" / f"{service}.log"

    @staticmethod
    def nginx_conf(m: Manifest) -> Path:
        return m.state_dir / "nginx" / "nginx.conf"

    def app_argv(self, m: Manifest, track: Track = "stable") -> list[str]:
        return app_argv(m, self.python, track)

    def app_env(self, m: Manifest, track: Track, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MODE=track,
            APP_VERSION=m.services.version if track == "stable" else m.canary_version,
            APP_IMAGE=m.services.image if track == "stable" else m.canary_image,
            APP_PORT=str(port),
            APP_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def _spec(self, m: Manifest, track: Track) -> str:
        env = self.app_env(m, track, 0)
        keys = {k: env[k] for k in ("MODE", "APP_VERSION", "APP_IMAGE", "APP_HOST")}
        return hashlib.sha256(json.dumps([self.app_argv(m, track), keys]).encode()).hexdigest()[:16]

    def nginx_argv(self, m: Manifest, conf: Path, *, test: bool = False) -> list[str]:
        globals_ = "daemon off;"
        if os.geteuid() == 0:
            # As root, workers would run as `nobody` and could not write temp files in the state folder.
            globals_ += " user root;"
        argv = [find_nginx(), "-p", str(m.state_dir / "nginx"), "-c", str(conf), "-e", str(self._error_log(m))]
        return [*argv, "-g", globals_] + (["-t", "-q"] if test else [])

    @staticmethod
    def _error_log(m: Manifest) -> Path:
        return m.state_dir / "logs" / "nginx-error.log"

    def record(self, m: Manifest, service: str) -> procs.ProcRecord | None:
        return procs.ProcRecord.load(self.pid_path(m, service))

    def running(self, m: Manifest, service: str) -> procs.ProcRecord | None:
        rec = self.record(m, service)
        return rec if procs.is_running(rec) else None

    # --- apps --------------------------------------------------------------------------------------------------

    def _pick_port(self, m: Manifest, track: Track, running_on: int | None) -> int:
        """The track's first port, or its second one while the running app holds the first (blue/green). A taken
        port is an error naming its holder: the ports are a promise of the manifest (docs/operations.md) - unless
        the holder is our own orphan (`_reclaim_port`), which is stopped, saying so."""
        first, second = local_app_ports(m, track)
        port = second if running_on == first else first
        if not procs.port_free(port) and not self._reclaim_port(m, port):
            offset = port - m.services.port
            field = f"services.port + {offset}, the {track} app's port" if offset else "services.port"
            raise OperationFailed(
                procs.describe_port_in_use(port, field),
                hint="stop that program or change services.port in the manifest (the local runtime uses "
                "services.port to services.port + 3)",
            )
        return port

    def _start_app(self, m: Manifest, track: Track, port: int, *, pid_file: Path) -> procs.ProcRecord:
        service = service_of(m, track)
        return procs.start(
            service,
            self.app_argv(m, track),
            env=self.app_env(m, track, port),
            cwd=m.base_dir,
            log_path=self.log_path(m, service),
            pid_path=pid_file,
            port=port,
            spec=self._spec(m, track),
            version=m.services.version if track == "stable" else m.canary_version,
            image=m.services.image if track == "stable" else m.canary_image,
        )

    def _wait_app(self, m: Manifest, rec: procs.ProcRecord, timeout: float) -> None:
        def exited() -> Exception:
            code = procs.exit_code(rec)
            return HealthTimeout(
                f"{rec.name} exited before becoming healthy"
                + (f" (exit code {code})" if code is not None else "")
                + self._log_excerpt(rec.log),
                hint=f"see {rec.log}; check services.command / the app's settings",
            )

        def timed_out(last: str) -> Exception:
            return HealthTimeout(
                f"{rec.name} (pid {rec.pid}) did not answer GET {app_health_url(m, rec.port or 0)} with 200 "
                f"within {round(timeout, 1):g}s; last answer: {last}" + self._log_excerpt(rec.log),
                hint=f"see {rec.log}; raise --timeout if the app is just slow to start",
            )

        _poll_healthy(rec, app_health_url(m, rec.port or 0), timeout, 0.1, exited, timed_out)
        procs.observe_healthy(rec)  # what it runs once it answers (a command that execs another program)

    @staticmethod
    def _log_excerpt(log: str, n: int = 8) -> str:
        return log_excerpt(_log_lines(log, n))

    # --- policy engine ---------------------------------------------------------------------------------------

    def start_policy_engine(self, m: Manifest, *, timeout: float = 30.0, progress: Progress = _noop) -> None:
        """OPA as a supervised process beside the apps and nginx (runtime/opa_service.py)."""
        from . import opa_service

        opa_service.start(self, m, timeout=timeout, progress=progress)

    # --- tracks ------------------------------------------------------------------------------------------------

    def start_track(self, m: Manifest, track: Track, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        """Start the track's app (replacing a running one blue/green) and wait until it answers its health path."""
        service = service_of(m, track)
        pid_file = self.pid_path(m, service)
        self._settle(m, service)  # what a killed earlier attempt left of it is stopped first
        old = self.running(m, service)
        port = self._pick_port(m, track, old.port if old else None)
        progress(f"starting {service} on 127.0.0.1:{port}")
        new = self._start_app(m, track, port, pid_file=pid_file.with_name(f"{service}.next.json"))
        try:
            self._wait_app(m, new, timeout)
        except BaseException:
            procs.stop(new, grace=self.grace)
            pid_file.with_name(f"{service}.next.json").unlink(missing_ok=True)
            raise
        if old is not None:
            old.save(pid_file.with_name(f"{service}.retiring.json"))  # teardown finds it if we die half-way
        new.save(pid_file)
        pid_file.with_name(f"{service}.next.json").unlink(missing_ok=True)
        if old is not None:
            if self.running(m, NGINX):
                progress(f"switching nginx to the new {service}")
                self.reload_proxy(m)
            procs.stop(old, grace=self.grace)
            pid_file.with_name(f"{service}.retiring.json").unlink(missing_ok=True)

    def stop_track(self, m: Manifest, track: Track) -> None:
        """Stop the track's app, and what an interrupted start or switch left of it (`.next` / `.retiring`)."""
        service = service_of(m, track)
        pid_file = self.pid_path(m, service)
        for path in (pid_file.with_name(f"{service}.next.json"), pid_file.with_name(f"{service}.retiring.json"),
                     pid_file):  # fmt: skip
            rec = procs.ProcRecord.load(path)
            if rec is not None or not path.exists():
                procs.stop(rec, grace=self.grace)
                path.unlink(missing_ok=True)

    # --- recovery: what a run killed half-way left ------------------------------------------------------------

    def _settle(self, m: Manifest, service: str) -> None:
        """Before (re)starting `service`: a `.next` record is a start that never finished (its process got no
        traffic yet): stopped. A `.retiring` record is a blue/green switch that never finished: nginx is pointed at
        the current record, then the old process is stopped. Both are said as warnings."""
        pid_file = self.pid_path(m, service)
        current = self.record(m, service)
        for kind in ("next", "retiring"):
            path = pid_file.with_name(f"{service}.{kind}.json")
            rec = procs.ProcRecord.load(path)
            if rec is None:
                if not path.exists():
                    continue
                if procs.file_problem(path) is not None:
                    continue  # refused (warned): left alone, file and process
            elif current is None or rec.pid != current.pid:
                if procs.is_running(rec) or procs.orphaned_group(rec):
                    what = "a start" if kind == "next" else "a blue/green switch"
                    if kind == "retiring" and procs.is_running(current) and self.running(m, NGINX):
                        try:
                            self.reload_proxy(m)
                        except OperationFailed as exc:
                            procs.warn(f"could not point nginx away from {service} (pid {rec.pid}): {exc.message}")
                    procs.warn(f"stopped {service} (pid {rec.pid}, {path.name}) left by {what} that was interrupted")
                procs.stop(rec, grace=self.grace)
            path.unlink(missing_ok=True)

    def _settle_nginx(self, m: Manifest) -> bool:
        """A nginx whose master is gone (SIGKILL) while its workers still serve and hold the ports: stop those
        workers (checked to be ours) and forget the record, so nginx is started again. True when it did."""
        rec = self.record(m, NGINX)
        workers = procs.orphaned_group(rec)
        if rec is None or not workers:
            return False
        procs.warn(f"nginx's master (pid {rec.pid}) is gone but its workers (pid {', '.join(map(str, workers))}) "
                   "still held its ports: stopped them; nginx is started again")  # fmt: skip
        procs.stop(rec, grace=self.grace)
        self.pid_path(m, NGINX).unlink(missing_ok=True)
        return True

    def _known_pids(self, m: Manifest) -> set[int]:
        """Pids of every verified live record in the pid folder (with their process groups: nginx workers)."""
        folder = m.state_dir / "pids"
        known: set[int] = set()
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            rec = procs.ProcRecord.load(path)
            if rec is not None and (procs.is_running(rec) or procs.orphaned_group(rec)):
                known.add(rec.pid)
                known.update(procs.group_alive(rec.pid))
            elif rec is None and path.exists() and (pid := procs.pid_named_in(path)):
                known.add(pid)  # a refused file's process is left alone (warned)
        return known

    def _orphans(self, m: Manifest) -> list[int]:
        return procs.orphans(m.state_dir / "pids", self._known_pids(m), nginx_cwd=m.state_dir)

    def _reclaim_port(self, m: Manifest, port: int) -> bool:
        """A taken port held by our own orphan (a process we started for this state folder that no record names:
        a run killed between starting and recording it): stop it, say so, and True when the port is free again."""
        holder = procs.port_holder_pid(port)
        if holder is None or holder not in self._orphans(m):
            return False
        what = procs.port_holder(port) or f"pid {holder}"
        procs.warn(f"port {port} was held by {what}, left running by an interrupted swiftdeploy run: stopped it")
        procs.kill_pids([holder], grace=self.grace)
        deadline = time.monotonic() + 5.0
        while not procs.port_free(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return procs.port_free(port)

    # --- nginx -------------------------------------------------------------------------------------------------

    def _ports(self, m: Manifest) -> tuple[int, int | None]:
        stable = self.running(m, service_of(m, "stable"))
        if stable is None or stable.port is None:
            raise OperationFailed(
                f"the stable app {m.services.name} is not running",
                hint="run `swiftdeploy deploy` to start it (see `swiftdeploy status`)",
            )
        canary_port = None
        if m.services.mode == "canary":
            canary = self.running(m, m.canary_name)
            if canary is None or canary.port is None:
                raise OperationFailed(
                    f"the manifest's mode is canary but the canary app {m.canary_name} is not running",
                    hint="run `swiftdeploy promote canary` again, or `swiftdeploy rollback`",
                )
            canary_port = canary.port
        return stable.port, canary_port

    def render_conf(self, m: Manifest, *, all_to_canary: bool = False) -> tuple[str, list[Path]]:
        from ..render import NginxTarget, render_nginx

        stable_port, canary_port = self._ports(m)
        target = NginxTarget.local(m, m.state_dir, stable_port, canary_port)
        if all_to_canary:
            target = target.all_to_canary()
        return render_nginx(m, target), target.required_dirs()

    def _write_checked_conf(self, m: Manifest, *, all_to_canary: bool = False) -> Path:
        """Render, `nginx -t` a candidate file, and only then replace the live config."""
        text, dirs = self.render_conf(m, all_to_canary=all_to_canary)
        for folder in dirs:
            folder.mkdir(parents=True, exist_ok=True)
        conf = self.nginx_conf(m)
        candidate = conf.with_name("nginx.conf.candidate")
        atomic_write(candidate, text)
        try:
            done = subprocess.run(
                self.nginx_argv(m, candidate, test=True), capture_output=True, text=True, timeout=30, check=False
            )
            if done.returncode != 0:
                raise OperationFailed(
                    f"nginx rejected the generated local config ({candidate}):\n  "
                    + "\n  ".join((done.stderr or done.stdout).strip().splitlines()[-10:]),
                    hint="this is a swiftdeploy bug if the manifest validates; please report it with the file",
                )
            os.replace(candidate, conf)
        finally:
            candidate.unlink(missing_ok=True)
        return conf

    def _require_listener_ports(self, m: Manifest) -> None:
        """OperationFailed naming the holder when nginx's public or admin port is taken (by anything but our own
        orphan, which is stopped: `_reclaim_port`)."""
        for port, field in ((m.nginx.port, "nginx.port"), (m.nginx.admin_port, "nginx.admin_port")):
            if not procs.port_free(port) and not self._reclaim_port(m, port):
                raise OperationFailed(
                    procs.describe_port_in_use(port, field),
                    hint=f"stop that program or change {field} in the manifest",
                )

    def _start_nginx(self, m: Manifest, timeout: float, *, all_to_canary: bool = False) -> procs.ProcRecord:
        self._require_listener_ports(m)
        conf = self._write_checked_conf(m, all_to_canary=all_to_canary)
        rec = procs.start(
            NGINX,
            self.nginx_argv(m, conf),
            env=dict(os.environ),
            cwd=m.state_dir,
            log_path=self.log_path(m, NGINX),
            pid_path=self.pid_path(m, NGINX),
            port=m.nginx.port,
        )
        self._wait_nginx(m, rec, timeout)
        return rec

    def _wait_nginx(self, m: Manifest, rec: procs.ProcRecord, timeout: float) -> None:
        def exited() -> Exception:
            return OperationFailed(
                "nginx exited right after starting"
                + self._log_excerpt(rec.log)
                + self._log_excerpt(str(self._error_log(m)), 5),
                hint=f"see {self._error_log(m)}",
            )

        def timed_out(last: str) -> Exception:
            return HealthTimeout(
                f"nginx did not answer /stable/healthz on 127.0.0.1:{m.nginx.admin_port}; last answer: {last}"
                + self._log_excerpt(str(self._error_log(m)), 5),
                hint=f"see {self._error_log(m)}",
            )

        url = f"http://127.0.0.1:{m.nginx.admin_port}/stable/healthz"
        _poll_healthy(rec, url, min(timeout, 15.0), 0.05, exited, timed_out)
        procs.observe_healthy(rec)

    def reload_proxy(self, m: Manifest, *, all_to_canary: bool = False, weight: int | None = None) -> None:
        import psutil

        if weight is not None:
            m = m.with_canary_weight(weight)

        rec = self.running(m, NGINX)
        if rec is None and self._settle_nginx(m):
            # its workers were serving the old config without a master: a fresh nginx on the new one
            self._start_nginx(m, 15.0, all_to_canary=all_to_canary)
            return
        if rec is None:
            raise OperationFailed("nginx is not running", hint="run `swiftdeploy deploy` to start the stack")
        try:
            before = {c.pid for c in psutil.Process(rec.pid).children()}
        except psutil.Error:
            before = set()
        self._write_checked_conf(m, all_to_canary=all_to_canary)
        os.kill(rec.pid, signal.SIGHUP)
        # Reload is done when new workers run and the old ones have left (they stop accepting at once, and
        # finish in-flight requests; a slow one may linger: new connections already get the new config).
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                now = {c.pid for c in psutil.Process(rec.pid).children() if c.status() != psutil.STATUS_ZOMBIE}
            except psutil.Error:
                break
            if now - before and not (now & before):
                break
            time.sleep(0.05)
        if not procs.is_running(rec):
            raise OperationFailed("nginx stopped while reloading" + self._log_excerpt(str(self._error_log(m)), 5))

    # --- whole stack -------------------------------------------------------------------------------------------

    def up(self, m: Manifest, *, timeout: float = 60.0, progress: Progress = _noop) -> None:
        find_nginx()
        m.state_dir.mkdir(parents=True, exist_ok=True)
        tracks: list[Track] = ["stable", "canary"] if m.services.mode == "canary" else ["stable"]
        self._settle_nginx(m)  # a master-less nginx (workers serving, ports held): stopped, started again below
        for service in (service_of(m, "stable"), m.canary_name):
            self._settle(m, service)
        orphans = self._orphans(m)  # ours, but no record names them: a run killed right after starting them
        if orphans:
            procs.warn(f"stopped pid {', '.join(map(str, orphans))}: started for this stack by a swiftdeploy run "
                       "that was interrupted before recording them")  # fmt: skip
            procs.kill_pids(orphans, grace=self.grace)
        deadline = time.monotonic() + timeout  # the recovery above is not part of the health wait
        nginx_running = self.running(m, NGINX) is not None
        if not nginx_running:
            self._require_listener_ports(m)  # first, so a taken port fails before any app starts
        started: list[procs.ProcRecord] = []
        try:
            for track in tracks:
                service = service_of(m, track)
                current = self.running(m, service)
                if current is not None and current.spec == self._spec(m, track):
                    progress(f"{service} already running (pid {current.pid})")
                    continue
                self.start_track(m, track, timeout=max(1.0, deadline - time.monotonic()), progress=progress)
                rec = self.running(m, service)
                if rec is not None:
                    started.append(rec)
            if m.services.mode != "canary" and self.record(m, m.canary_name) is not None:
                progress(f"stopping {m.canary_name} (mode is stable)")
                if nginx_running:
                    self.reload_proxy(m)
                self.stop_track(m, "canary")
            if nginx_running:
                progress("reloading nginx")
                self.reload_proxy(m)
            else:
                progress(f"starting nginx on 127.0.0.1:{m.nginx.port} (admin 127.0.0.1:{m.nginx.admin_port})")
                started.append(self._start_nginx(m, max(1.0, deadline - time.monotonic())))
        except BaseException:
            if nginx_running:
                raise  # a converge of a running stack: keep what runs (the old processes are already replaced)
            for rec in reversed(started):  # a fresh start: leave nothing running that this call started
                procs.stop(rec, grace=self.grace)
                self.pid_path(m, rec.name).unlink(missing_ok=True)
            raise

    def down(self, m: Manifest) -> list[str]:
        folder = m.state_dir / "pids"
        records = [(p, procs.ProcRecord.load(p)) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
        # nginx first, so no request reaches an app that is going away.
        records.sort(key=lambda item: item[1] is None or item[1].name != NGINX)
        lines = []
        for path, rec in records:
            if rec is None and procs.file_problem(path) is not None:
                lines.append(f"{path.name}: refused, left alone (see the warning)")
                continue
            outcome = procs.stop(rec, grace=self.grace) if rec else "unreadable pid file"
            if rec is not None:
                lines.append(f"{rec.name} (pid {rec.pid}): {outcome}")
            if outcome != "refused":
                path.unlink(missing_ok=True)
        # What no record names but is ours (a run killed between starting a process and recording it).
        orphans = self._orphans(m) if m.state_dir.is_dir() else []
        if orphans:
            procs.kill_pids(orphans, grace=self.grace)
            lines += [f"pid {pid} (ours, not recorded): stopped" for pid in orphans]
        return lines

    def health(self, m: Manifest) -> dict[str, ServiceHealth]:
        result: dict[str, ServiceHealth] = {}
        services = [service_of(m, "stable"), m.canary_name, NGINX, OPA]
        for service in services:
            rec = self.record(m, service)
            if rec is None:
                continue
            if not procs.is_running(rec):
                code = procs.exit_code(rec)
                detail = f"not running (pid {rec.pid} exited" + (f" with code {code})" if code is not None else ")")
                if service == NGINX and (workers := procs.orphaned_group(rec)):
                    pids = ", ".join(map(str, workers))
                    detail = (f"master process (pid {rec.pid}) is gone; its workers (pid {pids}) still serve "
                              "without it (`swiftdeploy deploy` restarts nginx)")  # fmt: skip
                result[service] = ServiceHealth(service, False, False, detail, rec.pid, rec.port)
                continue
            url = (
                f"http://127.0.0.1:{m.nginx.admin_port}/stable/healthz"
                if service == NGINX
                else f"http://127.0.0.1:{rec.port}/health"
                if service == OPA
                else app_health_url(m, rec.port or 0)
            )
            healthy, detail = _health_answer(url)
            release = {"version": rec.version or None, "image": rec.image or None} if service != NGINX else {}
            result[service] = ServiceHealth(service, True, healthy, detail, rec.pid, rec.port, **release)
        return result

    def wait_healthy(self, m: Manifest, services: list[str], timeout: float, *, interval: float = 0.1) -> None:
        def hint(service: str) -> str:
            return f"see {self.log_path(m, service)}"

        # fail_fast: nothing restarts a local process that died.
        wait_until_healthy(self, m, services, timeout, interval=interval, fail_fast=True, hint=hint)

    def logs_tail(self, m: Manifest, service: str, n: int = 20) -> list[str]:
        return _log_lines(self.log_path(m, service), n)

    # --- ps and logs -------------------------------------------------------------------------------------------

    def services(self, m: Manifest) -> list[ServiceInfo]:
        """From the pid records and one health answer each; version from the app's APP_VERSION, uptime from the
        process's start time. Every service `health` reports is listed, so a supervised process added there
        (the OPA service) shows up here too."""
        import psutil

        states = self.health(m)
        found = []
        for name in dict.fromkeys([*expected_services(m), *states]):
            role, state, rec = role_of(m, name), states.get(name), self.record(m, name)
            if state is None or rec is None:
                found.append(ServiceInfo(name, role, "absent", "-", detail="not running (nothing recorded for it)"))
                continue
            ports = [m.nginx.port, m.nginx.admin_port] if name == NGINX else [rec.port] if rec.port else []
            info = ServiceInfo(name, role, "exited", "-", pid=rec.pid, ports=ports, detail=state.detail)
            if state.running:
                info.state, info.health = "running", "healthy" if state.healthy else "unhealthy"
                try:
                    proc = psutil.Process(rec.pid)
                    info.uptime_seconds = max(0.0, time.time() - proc.create_time())
                    if role in ("stable", "canary"):
                        info.version = proc.environ().get("APP_VERSION")
                except psutil.Error:
                    pass
            found.append(info)
        return found

    def log_files(self, m: Manifest, service: str) -> list[Path]:
        """Where a service's output goes: logs/<service>.log; nginx also writes its error and access logs."""
        if service == NGINX:
            logs = m.state_dir / "logs"
            return [self.log_path(m, NGINX), self._error_log(m), logs / "nginx-access.log"]
        return [self.log_path(m, service)]

    def logs(self, m: Manifest, services: Sequence[str], *, tail: int = 100, follow: bool = False) -> Iterator[LogLine]:
        """The log files of the named services (default: every service `ps` would list, plus any other with a pid
        file), `tail` lines each; each line names its file when there are several."""
        names = list(services) or list(dict.fromkeys([*expected_services(m), *self._recorded(m)]))
        paths = [path for name in names for path in self.log_files(m, name)]
        label = {path: path.stem if len(paths) > 1 else None for path in paths}
        if follow:
            for path, line in procs.follow(paths, tail=tail):
                yield LogLine(line, label[path])
            return
        for path in paths:
            for line in procs.tail(path, tail, max_bytes=8 * 1024 * 1024):
                yield LogLine(line, label[path])

    @staticmethod
    def _recorded(m: Manifest) -> list[str]:
        """Services with a pid file (not the `.next`/`.retiring` files of a blue/green switch)."""
        folder = m.state_dir / "pids"
        return sorted(p.stem for p in folder.glob("*.json") if "." not in p.stem) if folder.is_dir() else []


def _log_lines(path: str | Path, n: int) -> list[str]:
    """The last `n` lines the process wrote (without swiftdeploy's own `--- ... starts ...` marker lines)."""
    return [x for x in procs.tail(path, n + 1) if not x.startswith("--- ")][-n:]


def _poll_healthy(
    rec: procs.ProcRecord,
    url: str,
    timeout: float,
    interval: float,
    exited: Callable[[], Exception],
    timed_out: Callable[[str], Exception],
) -> None:
    """Poll `url` until it answers 200; raise `exited()` as soon as the process dies, `timed_out(last answer)`
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if not procs.is_running(rec):
            raise exited()
        healthy, last = _health_answer(url)
        if healthy:
            return
        if time.monotonic() >= deadline:
            raise timed_out(last)
        time.sleep(interval)
