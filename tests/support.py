"""Helpers shared by every test package: free ports, waiting for and stopping processes, the demo API and the real
nginx as processes on 127.0.0.1, healthy host facts and relaxed host thresholds, the minimal and a local-runtime
stack manifest, the CLI as a subprocess, background traffic, and the check that nothing a test started is left
running.

Import it as `from support import ...` from any test module (tests/conftest.py puts tests/ on sys.path); the
fixtures built on it (`demo_api`, `local_nginx`, `nginx_binary`, `compose_binary`) live in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "manifest.yaml"
SWIFTDEPLOY = str(Path(sys.executable).with_name("swiftdeploy"))  # this environment's console script

# --- ports and processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on now, outside the kernel's ephemeral range: every client connection takes
    its local port from that range, so a port found free there may be taken a moment later (by this test's
    traffic or, under `pytest -n`, another worker's) before the listener it is meant for binds it."""
    from swiftdeploy.runtime.procs import free_port_block

    return free_port_block(1)


def app_port_block() -> int:
    """services.port for a local-runtime manifest: it and the next three ports (the local runtime's app ports) are
    free, outside the ephemeral range client connections use."""
    from swiftdeploy.runtime.procs import free_port_block

    return free_port_block(4)


def stack_ports(extra: int) -> list[int]:
    """services.port of a local-runtime stack (free with its next three ports, the app ports) followed by `extra`
    more free ports (nginx.port, nginx.admin_port, opa.port, ...): one block, so no two of them coincide."""
    from swiftdeploy.runtime.procs import free_port_block

    base = free_port_block(4 + extra)
    return [base, *range(base + 4, base + 4 + extra)]


def distinct_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float, log: Path | None = None
) -> None:
    """Poll `ready()` until it holds; fails at once when `proc` exits first, and after `timeout` seconds (showing
    `log`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}{_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {timeout} s{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')}" if log is not None and log.exists() else ""


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send `sig` (SIGTERM; SIGQUIT is nginx's graceful stop), wait, SIGKILL as a fallback; the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def leftovers(folder: Path) -> list[str]:
    """Live processes started for this folder: their cwd or argv is inside it (apps run with cwd = the manifest's
    folder, nginx with cwd = the state folder)."""
    found = []
    root = str(folder)
    for proc in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            cwd = proc.info["cwd"] or ""
            cmd = " ".join(proc.info["cmdline"] or [])
            if cwd.startswith(root) or root in cmd:
                found.append(f"pid {proc.pid}: {cmd} (cwd {cwd})")
        except psutil.Error:
            continue
    return found


def kill_leftovers(folder: Path) -> None:
    for line in leftovers(folder):
        pid = int(line.split()[1].rstrip(":"))
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


# --- policy inputs and thresholds -------------------------------------------------------------------------------

# Host facts every default infrastructure threshold allows.
HEALTHY_HOST: dict[str, Any] = {
    "disk_free_gb": 50.0,
    "disk_path": "/srv",
    "cpu_load_1m": 0.5,
    "cpu_count": 4,
    "memory_used_percent": 40.0,
    "memory_available_gb": 8.0,
}

# The test machine's own load, disk and memory must not decide a test: host thresholds no real host exceeds.
RELAXED_HOST = {"max_cpu_load": 1000, "min_disk_free_gb": 0, "max_memory_used_percent": 100}


def relaxed_host_thresholds(**overrides: float) -> str:
    """`policy.thresholds` as a YAML flow mapping: the relaxed host thresholds, with `overrides` (the canary
    thresholds stay the policy defaults)."""
    return "{" + ", ".join(f"{name}: {value}" for name, value in (RELAXED_HOST | overrides).items()) + "}"


# --- the demo API and nginx as real processes -------------------------------------------------------------------

DEMO_API_SETTINGS = ("MODE", "APP_VERSION", "APP_PORT", "APP_HOST", "METRICS_ENABLED")


def demo_api_env(**settings: str) -> dict[str, str]:
    """This process's environment without demo API settings of its own, plus `settings`."""
    return {k: v for k, v in os.environ.items() if k not in DEMO_API_SETTINGS} | settings


class DemoApi:
    """`python -m demo_api` on a free 127.0.0.1 port (or `host`:`port`: any loopback address 127.0.0.0/8, e.g. one
    swarm "task" per address on one shared port), healthy when the constructor returns (else it is stopped and the
    error shows its log); `stop()` ends it (SIGTERM, then SIGKILL) and returns the exit code."""

    def __init__(
        self,
        log_dir: Path,
        mode: str = "stable",
        version: str = "1.0.0",
        *,
        timeout: float = 20.0,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.mode = mode
        self.version = version
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.log = log_dir / f"demo_api-{mode}-{host}-{self.port}.log"
        env = demo_api_env(MODE=mode, APP_VERSION=version, APP_PORT=str(self.port), APP_HOST=host)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "demo_api"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(self._healthy, self.proc, f"demo API ({mode})", timeout, self.log)
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> int | None:
        return stop_process(self.proc)


class LocalNginx:
    """The real nginx on the local-runtime variant of the generated nginx.conf (`NginxTarget.local`), in front of
    upstreams on 127.0.0.1 ports; ready when the constructor returns. Stops (SIGQUIT, then SIGKILL) on `stop()` or
    at the end of a `with` block."""

    def __init__(self, nginx: str, m: Any, state: Path, stable_port: int, canary_port: int | None = None) -> None:
        from swiftdeploy.render import NginxTarget, render_nginx

        self.target = NginxTarget.local(m, state, stable_port, canary_port)
        for folder in self.target.required_dirs():
            folder.mkdir(parents=True, exist_ok=True)
        self.conf = state / "nginx" / "nginx.conf"
        self.conf.write_text(render_nginx(m, self.target), encoding="utf-8")
        self.public = f"http://127.0.0.1:{m.nginx.port}"
        self.admin = f"http://127.0.0.1:{m.nginx.admin_port}"
        startup_log = state / "logs" / "nginx-startup.log"
        self.proc = subprocess.Popen(
            [nginx, "-e", str(startup_log), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: port_open(m.nginx.admin_port), self.proc, "nginx", 15.0, startup_log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc, sig=signal.SIGQUIT)

    def __enter__(self) -> LocalNginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DnsServer:
    """A tiny DNS server on 127.0.0.1:<free UDP port> standing in for Docker's (127.0.0.11) in front of nginx: it
    answers A queries from `records` (name -> IPv4 addresses, changed with `set` while it runs), NXDOMAIN for a
    name it does not hold (or holds with no address). Bounded: one datagram of at most 512 bytes at a time, one
    question each, and a malformed or non-query packet gets no answer. `askers(name, since=generation)`: the
    client addresses (one per nginx worker: each keeps its resolver socket) that asked for `name` after the
    `set` that returned that generation. Stops (thread joined, socket closed) on `stop()` or after a `with`."""

    TTL = 1  # seconds; nginx's `resolver ... valid=1s` overrides it anyway

    def __init__(self, records: dict[str, list[str]] | None = None) -> None:
        self._lock = threading.Lock()
        self._records = {name.lower(): list(addrs) for name, addrs in (records or {}).items()}
        self._generation = 0
        self._asked: list[tuple[int, str, tuple[str, int]]] = []  # (generation, name, client), bounded below
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    def set(self, name: str, addresses: list[str]) -> int:
        """Answer `addresses` for `name` from now on; the new generation."""
        with self._lock:
            self._records[name.lower()] = list(addresses)
            self._generation += 1
            return self._generation

    def askers(self, name: str, since: int = 0) -> set[tuple[str, int]]:
        with self._lock:
            return {client for gen, asked, client in self._asked if asked == name.lower() and gen >= since}

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, client = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(data, client)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, client)

    def answer(self, data: bytes, client: tuple[str, int] = ("", 0)) -> bytes | None:
        """The reply to one query datagram, or None (malformed, a reply, not a standard query, not 1 question)."""
        if len(data) < 12:
            return None
        ident, flags, questions = struct.unpack("!HHH", data[:6])
        if flags & 0xF800 or questions != 1:  # QR set (a reply) or an opcode other than QUERY
            return None
        labels, pos = [], 12
        while pos < len(data) and data[pos] != 0:
            size = data[pos]
            if size > 63 or pos + 1 + size > len(data) or sum(map(len, labels)) + size > 253:
                return None  # a compression pointer (not allowed in a question), a cut label or an over-long name
            labels.append(data[pos + 1 : pos + 1 + size])
            pos += 1 + size
        if pos + 5 > len(data):
            return None
        qtype, qclass = struct.unpack("!HH", data[pos + 1 : pos + 5])
        try:
            name = b".".join(labels).decode("ascii").lower()
        except UnicodeDecodeError:
            return None
        with self._lock:
            addresses = list(self._records.get(name) or [])
            self._asked.append((self._generation, name, client))
            del self._asked[:-10_000]
        answers = [a for a in addresses if qtype == 1 and qclass == 1]  # A, IN: other types get no record
        rcode = 0 if addresses else 3  # NXDOMAIN
        header = struct.pack("!6H", ident, 0x8400 | (flags & 0x0100) | 0x0080 | rcode, 1, len(answers), 0, 0)
        records = b"".join(
            struct.pack("!HHHIH", 0xC00C, 1, 1, self.TTL, 4) + socket.inet_aton(a) for a in answers
        )  # 0xC00C: the name is the question's (a pointer to offset 12)
        return header + data[12 : pos + 5] + records

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SwarmNginx:
    """The real nginx on the generated swarm nginx.conf (`render_nginx(m, NginxTarget.swarm(m))`, or its
    all_to_canary handover variant) with only what this machine cannot give substituted, each substitution
    required to match exactly: Docker's DNS 127.0.0.11 -> `resolver` (a DnsServer), the admin socket's path in the
    nginx task -> `<state>/admin.sock`, the task's /tmp pid and temp paths -> `<state>/`, its stdio logs -> files in
    `<state>/`, the public `listen <nginx.port>` -> 127.0.0.1 only. Ready (both listeners accept) when the
    constructor returns; stops (SIGQUIT, then SIGKILL) on `stop()` or after a `with` block."""

    def __init__(self, nginx: str, m: Any, state: Path, resolver: str, *, all_to_canary: bool = False) -> None:
        from swiftdeploy.render import NginxTarget, render_nginx
        from swiftdeploy.render.stack import ADMIN_SOCKET

        target = NginxTarget.swarm(m)
        text = render_nginx(m, target.all_to_canary() if all_to_canary else target)
        state.mkdir(parents=True, exist_ok=True)
        self.socket = state / "admin.sock"
        self.access_log, self.error_log = state / "access.log", state / "error.log"
        substitutions = [
            ("resolver 127.0.0.11 valid=1s ipv6=off;", f"resolver {resolver} valid=1s ipv6=off;", 1),
            (f"listen unix:{ADMIN_SOCKET};", f"listen unix:{self.socket};", 1),
            ('pid "/tmp/nginx.pid";', f'pid "{state}/nginx.pid";', 1),
            ('_temp_path "/tmp/', f'_temp_path "{state}/', 5),
            ("error_log stderr warn;", f'error_log "{self.error_log}" warn;', 1),
            ('access_log "/dev/stdout" swiftdeploy;', f'access_log "{self.access_log}" swiftdeploy;', 1),
            (f"listen {m.nginx.port};", f"listen 127.0.0.1:{m.nginx.port};", 1),
        ]
        for old, new, count in substitutions:
            assert text.count(old) == count, f"the swarm nginx.conf no longer has {count} x {old!r}"
            text = text.replace(old, new)
        self.conf = state / "nginx.conf"
        self.conf.write_text(text, encoding="utf-8")
        self.public = f"http://127.0.0.1:{m.nginx.port}"
        startup_log = state / "nginx-startup.log"
        self.proc = subprocess.Popen(
            [nginx, "-e", str(startup_log), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(self._ready, self.proc, "nginx (swarm config)", 15.0, startup_log)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not port_open(int(self.public.rsplit(":", 1)[1])):
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            return sock.connect_ex(str(self.socket)) == 0

    def admin(self, timeout: float = 5.0) -> httpx.Client:
        """An httpx client on the admin unix socket (close it, or use it in a `with`)."""
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://admin", timeout=timeout
        )

    def stop(self) -> None:
        stop_process(self.proc, sig=signal.SIGQUIT)

    def __enter__(self) -> SwarmNginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- manifests, the CLI as a subprocess, traffic ----------------------------------------------------------------

# The minimal manifest: every other field has a default.
MINIMAL_MANIFEST = """\
services: {image: swift-deploy-1-node:latest, port: 3000}
nginx:    {image: nginx:latest, port: 8080}
network:  {name: swiftdeploy-net, driver_type: bridge}
"""

STACK_MANIFEST = """\
# Lifecycle test manifest. This comment must survive every edit.
services:
  name: app
  image: swift-deploy-1-node:latest   # stable image
  version: 1.0.0
  port: {app_port}
{command}canary:
  image: swift-deploy-1-node:next     # the candidate
  version: 2.0.0
  weight: {weight}
nginx:
  port: {public_port}
  admin_port: {admin_port}
  contact: ops@example.com
runtime: local
policy:
  engine: embedded
  window_seconds: 60  # the longest `promote stable` watches; it stops at the first clear verdict
  # host thresholds relaxed: the test machine is busy; canary thresholds stay the defaults
  thresholds: {thresholds}
"""


def write_manifest(
    folder: Path,
    *,
    weight: int = 50,
    command: list[str] | None = None,
    thresholds: dict[str, float] | None = None,
    **ports: int,
) -> Path:
    """folder/manifest.yaml for a local-runtime stack on free ports (`app_port=`, `public_port=`, `admin_port=`
    choose one; the app ports are services.port to services.port + 3); `thresholds` override the relaxed host
    thresholds."""
    app_port, public_port, admin_port = stack_ports(2)
    values = {"public_port": public_port, "admin_port": admin_port, "app_port": app_port, **ports}
    command_yaml = ""
    if command is not None:
        command_yaml = "  command: [" + ", ".join(f"'{part}'" for part in command) + "]\n"
    text = STACK_MANIFEST.format(
        weight=weight, command=command_yaml, thresholds=relaxed_host_thresholds(**(thresholds or {})), **values
    )
    path = folder / "manifest.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def cli(
    manifest: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`swiftdeploy -m MANIFEST ARGS...` as a subprocess (wide, uncoloured output)."""
    env = {**(env or os.environ), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [SWIFTDEPLOY, "-m", str(manifest), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@contextlib.contextmanager
def background_traffic(
    m: Any, rps: float = 40, duration: float = 60, headers: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """`swiftdeploy.ops.traffic` to the public listener in a thread while the block runs; the dict it yields holds
    the traffic summary (`to_dict()`) once the block is over. `headers={"Connection": "close"}`: one connection per
    request, so a request without an answer is the stack's doing (not the keep-alive race of a graceful reload,
    docs/operations.md#track-changes-without-dropping-requests)."""
    from swiftdeploy.ops import traffic

    stop = threading.Event()
    summary: dict[str, Any] = {}
    sender = threading.Thread(
        target=lambda: summary.update(traffic(m, rps, duration, headers=headers, stop=stop).to_dict()), daemon=True
    )
    sender.start()
    try:
        yield summary
    finally:
        stop.set()
        sender.join(timeout=30)
