"""The docker end-to-end story, run by scripts/e2e_docker.sh against its private engine (DOCKER_HOST is set).

Every step goes through the real `swiftdeploy` console script, as a person would type it, and checks its exit code
and what a client sees on the 127.0.0.1 published ports:

  deploy (OPA first) -> requests (headers, 404 JSON for /metrics and /chaos, admin listener) -> engine view
  (hardening) -> OPA locked down (unreachable from the containers and through nginx, writes refused) -> OPA stopped
  (the gate exits 4, nothing changes; started again, it answers) -> promote canary under traffic -> split seen
  -> chaos error -> promote stable under traffic BLOCKED (exit 3, nothing changed) -> recover -> promote stable
  under traffic (exit 0) -> traffic on the new stable -> promote canary + rollback under traffic -> rollout in
  three steps under traffic (exit 0) -> rollout with chaos error at step 2 (rolled back, exit 3) -> rollout stopped
  by `abort` from a second process (exit 3) -> status --once -> audit -> every gate decided by OPA -> undo under
  traffic (2.0.0 back) -> teardown -> nothing left.

Every track change runs under background traffic (Background): not one request may get a 502/503/504 or go
unanswered (the only 5xx allowed are the app's own chaos 500s during the blocked promotion).

A failing step prints its name, the command's output and the tail of `docker compose logs`; teardown (and, if that
fails, `docker compose down -v`) runs whatever happened. Phase timings go to --timings as "name<TAB>seconds" lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from textwrap import dedent

PROJECT = "sde2e"
NETWORK = "sde2e-net"
# The longest `promote stable` watches the canary; it stops at the first clear verdict: the failing canary within
# about a second, the healthy one once ~230 clean canary requests were seen (about 18 s at 12.5 canary req/s).
WINDOW = 60
RPS = 25  # background traffic during every track change (half of it reaches the canary)
MAX_TRAFFIC_SECONDS = 120  # a background sender stops by itself after this, whatever happens
ROLLOUT_RPS = 50  # the rollout stories: at 25 % of 50 req/s the first step's allow needs about 20 s

# OPA's own paths, sent to nginx's listeners: none may reach OPA.
OPA_PATHS = (("GET", "/health"), ("POST", "/v1/data/swiftdeploy/canary/decision"), ("PUT", "/v1/policies/x"))
# Sent to OPA itself from the host: each must be refused (HTTP 401) by its authorization policy.
EVIL = b'package swiftdeploy.infrastructure\n\ndecision := {"allow": false, "verdict": "deny"}\n'
OPA_WRITES = (
    ("PUT", "/v1/policies/evil", EVIL),
    ("PUT", "/v1/data/swiftdeploy/thresholds", b"{}"),
    ("DELETE", "/v1/policies/infrastructure.rego", None),
    ("GET", "/v1/data", None),
)

MANIFEST = """\
# swiftdeploy docker end-to-end manifest, written by scripts/e2e/story.py into a temporary folder.
project: {project}
services:
  name: app
  image: {stable_image}       # built from src/demo_api/Dockerfile on the local Debian base
  version: 1.0.0
  port: 3000
canary:
  image: {canary_image}       # the same build under the next version's tag
  version: 2.0.0
  weight: 50                  # half of the public traffic goes to the canary
  steps: [25, 50, 75]         # `rollout` only: its weights step by step
  analysis: {{max_step_seconds: 90}}
nginx:
  image: {nginx_image}
  port: {public_port}
  admin_port: {admin_port}
  proxy_timeout: 10s
network:
  name: {network}
opa:
  image: {opa_image}          # made from the pinned binary the tests ran (`make opa`)
  port: {opa_port}            # the host's 127.0.0.1 only
runtime: docker
policy:
  engine: opa                 # the real OPA decides every gate; no fallback
  window_seconds: {window}
  thresholds:
    # Relaxed HOST thresholds: image builds just ran on a busy 2-core machine, so a 1-minute load well above 2.0
    # is expected. The CANARY thresholds stay the policy defaults: the blocked promotion must be a real verdict.
    max_cpu_load: {max_load}
    min_disk_free_gb: 1
    max_memory_used_percent: 98
"""


class StepFailed(Exception):
    pass


class Background:
    """Open-loop GETs to http://127.0.0.1:<port>/ at `rps` until stopped (at most `max_seconds`), counting answers by
    status and X-Mode and requests without an answer by error type.

    Each request opens its own connection (`Connection: close`): a refused connection, a reset or a cut response is
    then always the stack's doing. (A client reusing an idle keep-alive connection can also race nginx closing it on
    a reload, the retry case of RFC 9112 9.3.1; docs/docker-e2e.md measures that separately.)
    """

    def __init__(
        self, port: int, rps: float = RPS, max_seconds: float = MAX_TRAFFIC_SECONDS, host: str = "127.0.0.1"
    ) -> None:
        self.url = f"http://{host}:{port}/"
        self.rps, self.max_seconds = rps, max_seconds
        self.by_status: Counter[str] = Counter()
        self.by_mode: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        request = urllib.request.Request(self.url, headers={"Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                status, mode = response.status, response.headers.get("X-Mode", "-")
        except urllib.error.HTTPError as exc:
            exc.read()
            status, mode = exc.code, exc.headers.get("X-Mode", "-")
        except OSError as exc:  # refused, reset, timeout, a response cut short
            reason = getattr(exc, "reason", exc)
            with self._lock:
                self.errors[type(reason).__name__] += 1
            return
        with self._lock:
            self.by_status[str(status)] += 1
            self.by_mode[mode] += 1

    def _run(self) -> None:
        began = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            while not self._stop.is_set() and time.monotonic() - began < self.max_seconds:
                pool.submit(self._one)
                self.sent += 1
                self._stop.wait(max(0.0, began + self.sent / self.rps - time.monotonic()))

    def start(self) -> Background:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)  # the pool's exit waits for the requests in flight (10 s timeout each)

    def summary(self) -> str:
        return f"{self.sent} sent, by status {dict(self.by_status)}, by X-Mode {dict(self.by_mode)}, " + (
            f"no answer {dict(self.errors)}" if self.errors else "every request answered"
        )

    def failures(self, allowed: frozenset[str] = frozenset({"200"})) -> list[str]:
        """What a client lost: statuses outside `allowed`, and requests without an answer."""
        bad = [f"{n} x HTTP {status}" for status, n in sorted(self.by_status.items()) if status not in allowed]
        bad += [f"{n} x no answer ({kind})" for kind, n in sorted(self.errors.items())]
        if sum(self.by_status.values()) + sum(self.errors.values()) != self.sent:
            bad.append(f"{self.sent} sent but {sum(self.by_status.values()) + sum(self.errors.values())} counted")
        return bad


def host_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback (what a container could try to reach the host by)."""
    done = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10, check=False)
    found = [line.split()[3].split("/")[0] for line in done.stdout.splitlines() if len(line.split()) > 3]
    return sorted({a for a in found if not a.startswith("127.")})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Story:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.workdir)
        self.manifest = self.dir / "manifest.yaml"
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.public_port, self.admin_port, self.opa_port = sorted(ports)
        self.nginx_id = ""

    # --- plumbing -----------------------------------------------------------------------------------------------
    def sd(self, *argv: str, expect: int = 0, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `swiftdeploy -m manifest ARGV...` and require exit code `expect`."""
        cmd = [self.args.swiftdeploy, "-m", str(self.manifest), *argv]
        print(f"  $ swiftdeploy {' '.join(argv)}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != expect:
            raise StepFailed(
                f"`swiftdeploy {' '.join(argv)}` exited {done.returncode}, expected {expect}\n"
                f"--- stdout\n{done.stdout[-3000:]}--- stderr\n{done.stderr[-3000:]}"
            )
        return done

    def get(self, port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()

    def manifest_says(self, needle: str) -> None:
        text = self.manifest.read_text(encoding="utf-8")
        if needle not in text:
            raise StepFailed(f"the manifest should contain {needle!r}:\n{text}")
        if "# the same build under the next version's tag" not in text and "mode: canary" in text:
            raise StepFailed("the manifest lost its comments on a round-trip edit")

    def _compose_argv(self, *argv: str) -> list[str]:
        return ["docker", "compose", "-p", PROJECT, "-f", str(self.dir / "docker-compose.yml"), *argv]

    def compose(self, *argv: str) -> str:
        done = subprocess.run(self._compose_argv(*argv), capture_output=True, text=True, timeout=120, check=False)
        return done.stdout + done.stderr

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise StepFailed(message)

    # --- the steps ----------------------------------------------------------------------------------------------
    def write_manifest(self) -> None:
        self.manifest.write_text(
            MANIFEST.format(
                project=PROJECT,
                network=NETWORK,
                stable_image=self.args.stable_image,
                canary_image=self.args.canary_image,
                nginx_image=self.args.nginx_image,
                opa_image=self.args.opa_image,
                opa_port=self.opa_port,
                public_port=self.public_port,
                admin_port=self.admin_port,
                window=WINDOW,
                # E2E_MAX_LOAD: a host shared with other work may run busier than that
                max_load=float(os.environ.get("E2E_MAX_LOAD") or max(8.0, 4.0 * (os.cpu_count() or 1))),
            ),
            encoding="utf-8",
        )

    def deploy(self) -> None:
        done = self.sd("deploy", "--timeout", "180")
        said = done.stdout + done.stderr
        self.expect(said.find("starting the OPA service") < said.find("checking the host"), "OPA must start first")
        for name in ("docker-compose.yml", "nginx.conf", "policy-bundle/system/authz.rego"):
            self.expect((self.dir / name).is_file(), f"deploy did not write {name}")
        self.nginx_id = self.compose("ps", "-q", "nginx").strip()
        self.expect(bool(self.nginx_id), "no nginx container after deploy")

    def same_nginx(self, after: str) -> None:
        """Track changes reload nginx in place: the container deploy made still serves."""
        now = self.compose("ps", "-q", "nginx").strip()
        self.expect(now == self.nginx_id, f"nginx was recreated by {after}: container {self.nginx_id} -> {now}")

    def requests_stable(self) -> None:
        for _ in range(10):
            status, headers, body = self.get(self.public_port, "/")
            self.expect(status == 200, f"GET / answered {status}: {body[:200]}")
            self.expect(headers.get("x-deployed-by") == "swiftdeploy", f"X-Deployed-By missing: {headers}")
            self.expect(headers.get("x-mode") == "stable", f"X-Mode should be stable: {headers}")
            self.expect(json.loads(body).get("version") == "1.0.0", f"stable should be 1.0.0: {body}")
        for path in ("/metrics", "/chaos", "/metrics/x"):
            status, headers, body = self.get(self.public_port, path)
            self.expect(status == 404, f"public {path} should be 404, got {status}")
            self.expect(json.loads(body).get("code") == 404, f"public {path}: not the JSON 404 body: {body[:200]}")
            self.expect(headers.get("x-deployed-by") == "swiftdeploy", f"X-Deployed-By missing on {path}")
        status, _, body = self.get(self.admin_port, "/stable/metrics")
        self.expect(status == 200 and "http_requests_total" in body, f"admin /stable/metrics: {status} {body[:200]}")
        status, _, body = self.get(self.admin_port, "/stable/healthz")
        self.expect(status == 200, f"admin /stable/healthz: {status} {body[:200]}")
        status, _, body = self.get(self.admin_port, "/canary/healthz")
        self.expect(status == 503, f"admin /canary/healthz in stable mode should be 503, got {status}")

    def engine_view(self) -> None:
        """What the compose file promises (docs/contracts.md#docker-composeyml), as the real engine runs it."""
        ids = self.compose("ps", "-q").split()
        inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                              timeout=60, check=True).stdout)  # fmt: skip
        by_service = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}
        self.expect(set(by_service) == {"app", "nginx", "opa"}, f"services running: {sorted(by_service)}")
        for name, c in by_service.items():
            self.expect(c["Config"]["User"] not in ("", "0", "root"), f"{name} runs as root")
            self.expect(c["HostConfig"]["CapDrop"] == ["ALL"], f"{name} keeps capabilities")
            self.expect("no-new-privileges:true" in (c["HostConfig"]["SecurityOpt"] or []), f"{name}: new privs")
        app = by_service["app"]
        self.expect(app["State"]["Health"]["Status"] == "healthy", f"app health: {app['State'].get('Health')}")
        self.expect(not app["HostConfig"]["PortBindings"], f"the app must not be published: {app['HostConfig']}")
        ports = by_service["nginx"]["HostConfig"]["PortBindings"]
        admin = ports.get(f"{self.admin_port}/tcp") or [{}]
        self.expect(admin[0].get("HostIp") == "127.0.0.1", f"admin port must be on 127.0.0.1 only: {ports}")
        self.expect(by_service["nginx"]["HostConfig"]["ReadonlyRootfs"], "nginx's root file system is writable")
        opa = by_service["opa"]
        self.expect(opa["Config"]["Image"] == self.args.opa_image, f"OPA runs {opa['Config']['Image']}")
        self.expect(opa["HostConfig"]["NetworkMode"] == "host", f"OPA's network: {opa['HostConfig']['NetworkMode']}")
        self.expect(not opa["HostConfig"]["PortBindings"], f"OPA must publish nothing: {opa['HostConfig']}")
        self.expect(opa["HostConfig"]["ReadonlyRootfs"], "OPA's root file system is writable")
        args = opa["Args"]
        for flag in ("--authorization=basic", f"--addr=127.0.0.1:{self.opa_port}", "--bundle"):
            self.expect(flag in args, f"OPA runs without {flag}: {args}")
        shared = set(opa["NetworkSettings"]["Networks"]) & set(by_service["app"]["NetworkSettings"]["Networks"])
        self.expect(not shared - {"host"} and "host" not in by_service["app"]["NetworkSettings"]["Networks"],
                    f"OPA shares a network with the app: {shared}")  # fmt: skip
        uid = self.compose("exec", "-T", "app", "id", "-u").strip()
        self.expect(uid == "10001", f"the app's uid inside the container: {uid!r}")
        uids = self.compose("exec", "-T", "nginx", "sh", "-c", "cat /proc/[0-9]*/status | grep '^Uid:'").split("\n")
        real = {line.split()[1] for line in uids if line.startswith("Uid:")}
        self.expect(bool(real) and "0" not in real, f"nginx processes run as uids {real}, root among them")
        probe = "import os, sys; d = os.environ['LOG_DIR']; sys.exit(0 if os.access(d, os.W_OK) else 1)"
        done = subprocess.run(self._compose_argv("exec", "-T", "app", "python3", "-c", probe), timeout=60, check=False)
        self.expect(done.returncode == 0, "the app (non-root) cannot write its log volume LOG_DIR")

    # --- OPA ------------------------------------------------------------------------------------------------------
    def opa_http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
        """One request to OPA from the host, as any local process could send it."""
        url = f"http://127.0.0.1:{self.opa_port}{path}"
        request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def probe_from(self, service: str, control: tuple[str, int]) -> str:
        """From inside `service`'s container: try every address OPA could answer on - the container's own
        loopback, the bridge gateway (the host), every IPv4 address of the host, the names `opa` and
        `host.docker.internal` (each resolved within 3 s). Every one must fail; the control address (a neighbour on
        the compose network) must connect, so the probe itself works."""
        script = dedent(f"""
            import socket, sys, threading, time
            def gateway():
                for line in open("/proc/net/route").read().splitlines()[1:]:
                    fields = line.split()
                    if fields[1] == "00000000":
                        return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
            names = {{"opa": None, "host.docker.internal": None}}
            def resolve(name):
                names[name] = socket.gethostbyname(name)
            workers = [threading.Thread(target=resolve, args=(n,), daemon=True) for n in names]
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 3  # for all names: an unknown one may wait on an unreachable resolver
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
            seen = []
            hosts = list(dict.fromkeys(["127.0.0.1", gateway(), *{host_addresses()!r}]))
            hosts += [address or f"{{name}} (no such name)" for name, address in names.items()]
            for host in hosts:
                if host.endswith("(no such name)"):
                    seen.append(host)
                    continue
                try:
                    with socket.create_connection((host, {self.opa_port}), timeout=2):
                        seen.append(f"{{host}}: CONNECTED")
                except OSError as exc:
                    seen.append(f"{{host}}: {{type(exc).__name__}}")
            with socket.create_connection(({control[0]!r}, {control[1]}), timeout=5):
                seen.append("control {control[0]}:{control[1]}: connected")
            print("; ".join(seen))
            sys.exit(1 if any("CONNECTED" in s for s in seen) else 0)
        """)
        done = subprocess.run(self._compose_argv("exec", "-T", service, "python3", "-c", script),
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        self.expect(done.returncode == 0, f"from {service}: OPA reachable or probe broken: {done.stdout}{done.stderr}")
        return done.stdout.strip()

    def opa_locked_down(self) -> None:
        status, _ = self.opa_http("GET", "/health")
        self.expect(status == 200, f"OPA's /health from the host: {status}")
        print(f"  from app: {self.probe_from('app', ('nginx', self.public_port))}", flush=True)
        print(f"  from nginx: {self.probe_from('nginx', ('app', 3000))}", flush=True)
        # nginx never routes to OPA: OPA's paths on the public and admin listeners are nginx's or the app's answers.
        for port in (self.public_port, self.admin_port):
            for method, path in OPA_PATHS:
                data = b"{}" if method != "GET" else None
                host = {"Host": f"127.0.0.1:{self.opa_port}"}
                request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, host, method=method)
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        headers, body = response.headers, response.read().decode()
                except urllib.error.HTTPError as exc:
                    headers, body = exc.headers, exc.read().decode()
                self.expect(headers.get("X-Deployed-By") == "swiftdeploy", f"{method} :{port}{path} not via nginx")
                self.expect('"result"' not in body and "administrative policy" not in body,
                            f"{method} :{port}{path} reached OPA: {body[:200]}")  # fmt: skip
        # From the host: every write is refused and the decision stays what it was.
        before = json.loads(self.sd("policy", "check", "--json").stdout)
        for method, path, body in OPA_WRITES:
            status, text = self.opa_http(method, path, body)
            self.expect(status == 401, f"{method} {path} on OPA answered {status}: {text[:200]}")
        after = json.loads(self.sd("policy", "check", "--json").stdout)
        self.expect(
            (before["engine"], after["engine"]) == ("opa", "opa"), f"engines: {before['engine']}, {after['engine']}"
        )
        self.expect(
            before["verdict"] == after["verdict"] == "allow", f"verdicts: {before['verdict']} -> {after['verdict']}"
        )

    def opa_stopped(self) -> None:
        """OPA down mid-story: the next gate exits 4 and changes nothing; OPA started again: the gate answers."""
        files = ("manifest.yaml", "docker-compose.yml", "nginx.conf")
        before = {p: (self.dir / p).read_text() for p in files}
        print(self.compose("stop", "opa").strip(), flush=True)
        done = self.sd("promote", "canary", "--timeout", "180", expect=4)
        self.expect("unreachable" in done.stderr, f"the exit 4 should say OPA is unreachable:\n{done.stderr}")
        print("  " + next(x for x in done.stderr.splitlines() if x.startswith("error:"))[:300], flush=True)
        for path, old in before.items():
            self.expect((self.dir / path).read_text() == old, f"a gate without OPA changed {path}")
        ps = self.compose("ps", "--format", "{{.Service}}")
        self.expect("app-canary" not in ps, f"a canary started although the gate could not be asked:\n{ps}")
        print(self.compose("start", "opa").strip(), flush=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.opa_http("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            self.expect(time.monotonic() < deadline, "OPA did not answer /health within 30 s after `start`")
            time.sleep(0.25)
        answer = json.loads(self.sd("policy", "check", "--json").stdout)
        self.expect((answer["engine"], answer["verdict"]) == ("opa", "allow"), f"after restart: {answer}")

    def gates_by_opa(self) -> None:
        records = [json.loads(line) for line in (self.dir / "history.jsonl").read_text().splitlines()]
        gates = [
            (r.get("gate", "?"), r["domain"], r["engine"], r["verdict"])
            for r in records
            if r["event"] == "policy_decision"
        ]
        print(f"  {len(gates)} gate decisions: {gates}", flush=True)
        self.expect(len(gates) >= 5, f"expected at least 5 gate decisions, got {gates}")
        self.expect({g[2] for g in gates} == {"opa"}, f"a gate was not decided by OPA: {gates}")

    @contextlib.contextmanager
    def under_traffic(
        self, what: str, allowed: frozenset[str] = frozenset({"200"}), rps: float = RPS
    ) -> Iterator[Background]:
        """Background traffic around the block (from 1 s before); afterwards no request may have been lost."""
        sender = Background(self.public_port, rps=rps).start()
        try:
            time.sleep(1)
            yield sender
            time.sleep(0.5)  # requests sent right after the command returned reach the final config
        finally:
            sender.stop()
            print(f"  traffic during {what}: {sender.summary()}", flush=True)
        lost = sender.failures(allowed)
        self.expect(not lost, f"clients lost requests during {what}: {', '.join(lost)}")

    def promote_canary(self) -> None:
        with self.under_traffic("promote canary"):
            self.sd("promote", "canary", "--timeout", "180")
        self.manifest_says("mode: canary")
        self.same_nginx("promote canary")

    def split(self) -> None:
        modes: dict[str, int] = {}
        versions: dict[str, set[str]] = {}
        for _ in range(60):  # both tracks unseen in 60 draws at weight 50: p = 2 * 0.5**60
            status, headers, body = self.get(self.public_port, "/")
            self.expect(status == 200, f"GET / answered {status}: {body[:200]}")
            mode = headers.get("x-mode", "-")
            modes[mode] = modes.get(mode, 0) + 1
            versions.setdefault(mode, set()).add(json.loads(body).get("version"))
        print(f"  split over 60 requests: {modes}", flush=True)
        self.expect(set(modes) == {"stable", "canary"}, f"both tracks should answer, saw {modes}")
        self.expect(versions == {"stable": {"1.0.0"}, "canary": {"2.0.0"}}, f"versions per track: {versions}")
        for _ in range(10):
            _, headers, _ = self.get(self.public_port, "/", {"X-Canary": "always"})
            self.expect(headers.get("x-mode") == "canary", f"X-Canary: always reached {headers.get('x-mode')}")
        status, _, _ = self.get(self.admin_port, "/canary/healthz")
        self.expect(status == 200, f"admin /canary/healthz in canary mode: {status}")

    def chaos_error(self) -> None:
        self.sd("chaos", "error", "--rate", "0.5", "--track", "canary")
        errors = sum(self.get(self.public_port, "/", {"X-Canary": "always"})[0] == 500 for _ in range(20))
        self.expect(errors > 0, "no HTTP 500 from the canary in 20 requests after chaos error --rate 0.5")

    def promote_stable(self, expect: int, allowed: frozenset[str]) -> subprocess.CompletedProcess[str]:
        """`swiftdeploy promote stable` with background traffic for the whole window (the verdict needs it)."""
        with self.under_traffic(f"promote stable (exit {expect})", allowed):
            return self.sd("promote", "stable", "--window", str(WINDOW), "--timeout", "180", expect=expect)

    def promote_blocked(self) -> None:
        before = {p: (self.dir / p).read_text() for p in ("manifest.yaml", "docker-compose.yml", "nginx.conf")}
        # The canary answers 500 to about half of its requests (chaos): the only 5xx a client may see here.
        done = self.promote_stable(expect=3, allowed=frozenset({"200", "500"}))
        text = done.stdout + done.stderr
        print("  " + "\n  ".join(text.strip().splitlines()[-8:]), flush=True)
        self.expect("error_rate" in text, f"the blocked promotion should name the error_rate rule:\n{text}")
        for path, old in before.items():
            self.expect((self.dir / path).read_text() == old, f"a blocked promotion changed {path}")
        _, headers, _ = self.get(self.public_port, "/", {"X-Canary": "always"})
        self.expect(headers.get("x-mode") == "canary", "the canary should still run after a blocked promotion")

    def recover(self) -> None:
        self.sd("chaos", "recover", "--track", "canary")
        statuses = {self.get(self.public_port, "/", {"X-Canary": "always"})[0] for _ in range(10)}
        self.expect(statuses == {200}, f"the canary still fails after recover: {statuses}")

    def promote_allowed(self) -> None:
        self.promote_stable(expect=0, allowed=frozenset({"200"}))
        self.manifest_says("mode: stable")
        self.manifest_says("version: 2.0.0")
        self.same_nginx("promote stable")

    def after_promotion(self) -> None:
        done = self.sd("traffic", "--rps", "20", "--duration", "2", "--json")
        summary = json.loads(done.stdout)
        self.expect(summary["by_status"] == {"200": summary["sent"]}, f"only 200s expected: {summary['by_status']}")
        self.expect(summary["by_mode"] == {"stable": summary["sent"]}, f"only stable expected: {summary['by_mode']}")
        status, headers, body = self.get(self.public_port, "/")
        self.expect(json.loads(body).get("version") == "2.0.0", f"the new stable should be 2.0.0: {body}")
        status, _, _ = self.get(self.admin_port, "/canary/healthz")
        self.expect(status == 503, f"no canary should run after the promotion (admin /canary/healthz: {status})")
        ps = self.compose("ps", "--format", "{{.Service}}")
        self.expect("app-canary" not in ps, f"the canary container should be gone:\n{ps}")

    def rollback(self) -> None:
        with self.under_traffic("promote canary + rollback"):
            self.sd("promote", "canary", "--timeout", "180")
            self.sd("rollback")
        self.manifest_says("mode: stable")
        status, _, _ = self.get(self.admin_port, "/canary/healthz")
        self.expect(status == 503, f"no canary should run after the rollback (admin /canary/healthz: {status})")
        ps = self.compose("ps", "--format", "{{.Service}}")
        self.expect("app-canary" not in ps, f"the canary container should be gone after the rollback:\n{ps}")
        self.same_nginx("rollback")

    # --- progressive delivery: rollout and abort (docs/operations.md#progressive-delivery) -------------------------
    def next_canary(self, version: str) -> None:
        """A new release in the canary (the same image; the version is its APP_VERSION): canary.version edited."""
        text = self.manifest.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("canary:"))
        at = next(i for i in range(at, len(lines)) if lines[i].startswith("  version: "))
        lines[at] = f"  version: {version}\n"
        self.manifest.write_text("".join(lines), encoding="utf-8")

    def rollout_process(self) -> tuple[subprocess.Popen[str], Callable[[str, int], dict], Callable[[], tuple]]:
        """`swiftdeploy rollout --json` in the background: (process, wait_for(event, step), finish())."""
        cmd = [self.args.swiftdeploy, "-m", str(self.manifest), "rollout", "--json", "--timeout", "180"]
        print("  $ swiftdeploy rollout --json (in the background)", flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        records: list[dict] = []
        stderr: list[str] = []
        arrived = threading.Condition()

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                with arrived:
                    records.append(json.loads(line))
                    arrived.notify_all()

        readers = [
            threading.Thread(target=read, daemon=True),
            threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True),
        ]  # type: ignore[arg-type]
        for reader in readers:
            reader.start()

        def wait_for(event: str, step: int) -> dict:
            deadline = time.monotonic() + 240
            with arrived:
                while True:
                    found = [r for r in records if r.get("event") == event and r.get("step") == step]
                    if found:
                        return found[0]
                    self.expect(readers[0].is_alive(), f"rollout ended before {event} {step}: {records}")
                    self.expect(time.monotonic() < deadline, f"no {event} {step} within 240 s: {records}")
                    arrived.wait(1)

        def finish() -> tuple[int, str, list[dict]]:
            proc.wait(timeout=300)
            for reader in readers:
                reader.join(timeout=30)
            return proc.returncode, "".join(stderr), records

        return proc, wait_for, finish

    def canary_gone(self, after: str) -> None:
        status, _, _ = self.get(self.admin_port, "/canary/healthz")
        self.expect(status == 503, f"no canary should run after {after} (admin /canary/healthz: {status})")
        ps = self.compose("ps", "--format", "{{.Service}}")
        self.expect("app-canary" not in ps, f"the canary container should be gone after {after}:\n{ps}")

    def serves(self, version: str) -> None:
        for _ in range(10):
            status, headers, body = self.get(self.public_port, "/")
            self.expect(status == 200 and headers.get("x-mode") == "stable", f"GET /: {status} {headers}")
            self.expect(json.loads(body).get("version") == version, f"stable should be {version}: {body}")

    def rollout_healthy(self) -> None:
        """Three steps (25, 50, 75 %) under traffic: each allowed, then promoted; not one request lost."""
        self.next_canary("3.0.0")
        with self.under_traffic("rollout (3 steps)", rps=ROLLOUT_RPS):
            done = self.sd("rollout", "--json", "--timeout", "180")
        records = [json.loads(line) for line in done.stdout.splitlines()]
        verdicts = [(r["step"], r["weight"], r["verdict"]) for r in records if r.get("event") == "rollout_verdict"]
        print(f"  verdicts: {verdicts}", flush=True)
        self.expect(verdicts == [(1, 25, "allow"), (2, 50, "allow"), (3, 75, "allow")], f"verdicts: {verdicts}")
        self.expect(records[-1].get("ok") is True and records[-1].get("exit_code") == 0, f"result: {records[-1]}")
        self.manifest_says("version: 3.0.0")
        self.manifest_says("mode: stable")
        self.serves("3.0.0")
        self.canary_gone("the rollout")
        self.same_nginx("rollout")

    def rollout_denied(self) -> None:
        """A canary that starts failing at step 2 is rolled back by itself: exit 3, stable untouched."""
        self.next_canary("4.0.0")
        with self.under_traffic("rollout (error at step 2)", frozenset({"200", "500"}), rps=ROLLOUT_RPS):
            _proc, wait_for, finish = self.rollout_process()
            wait_for("rollout_step", 2)
            self.sd("chaos", "error", "--rate", "0.5", "--track", "canary")
            code, stderr, records = finish()
        print("  " + "\n  ".join(stderr.strip().splitlines()[-6:]), flush=True)
        self.expect(code == 3, f"rollout exited {code}, expected 3:\n{stderr[-3000:]}")
        self.expect("error_rate" in stderr and "rolled back at step 2" in stderr, f"no violation shown:\n{stderr}")
        verdicts = [(r["step"], r["verdict"]) for r in records if r.get("event") == "rollout_verdict"]
        self.expect(verdicts == [(1, "allow"), (2, "deny")], f"verdicts: {verdicts}")
        self.manifest_says("mode: stable")
        self.serves("3.0.0")
        self.canary_gone("the automatic rollback")

    def rollout_aborted(self) -> None:
        """`swiftdeploy abort` from a second process while step 1 watches: rolled back, the rollout exits 3."""
        with self.under_traffic("rollout + abort", rps=ROLLOUT_RPS):
            _proc, wait_for, finish = self.rollout_process()
            wait_for("rollout_step", 1)
            done = self.sd("abort")
            code, stderr, _records = finish()
        print(f"  {done.stdout.strip()}", flush=True)
        self.expect("aborted by" in done.stdout, f"abort said: {done.stdout}{done.stderr}")
        self.expect(code == 3 and "rollout aborted by" in stderr, f"rollout exited {code}:\n{stderr[-3000:]}")
        self.manifest_says("mode: stable")
        self.serves("3.0.0")
        self.canary_gone("the abort")
        self.same_nginx("abort")

    def undo(self) -> None:
        """After the story's promotions: `undo` brings back the stable the last promotion (the healthy rollout, 3.0.0)
        replaced, 2.0.0 on its image, under traffic, without recreating nginx; `--to` a version not on record is
        refused (exit 2) naming what is."""
        with self.under_traffic("undo"):
            done = self.sd("undo", "--timeout", "180", "--json")
        answer = json.loads(done.stdout)
        self.expect(answer["ok"] and answer["version"] == "2.0.0", f"undo should restore 2.0.0: {answer}")
        self.manifest_says("version: 2.0.0")
        self.manifest_says(f"image: {self.args.canary_image}")
        self.serves("2.0.0")
        self.canary_gone("undo")
        self.same_nginx("undo")
        done = self.sd("undo", "--to", "9.9.9", expect=2)
        self.expect("1.0.0" in done.stderr, f"undo --to 9.9.9 should name what is on record (1.0.0):\n{done.stderr}")

    def status(self) -> None:
        done = self.sd("status", "--once")
        self.expect("stable" in done.stdout, f"status --once shows no stable track:\n{done.stdout}")
        snapshot = json.loads(self.sd("status", "--json").stdout)
        self.expect("stable" in snapshot.get("tracks", {}), f"status --json has no stable track: {snapshot}")

    def audit(self) -> None:
        self.sd("audit")
        reports = list(self.dir.glob("**/audit_report.md"))
        self.expect(bool(reports), "audit wrote no audit_report.md")
        text = reports[0].read_text(encoding="utf-8")
        self.expect("promote" in text.lower(), "the audit report does not mention the promotions")

    def teardown(self) -> None:
        self.sd("teardown")
        self.nothing_left()

    def nothing_left(self) -> None:
        # The engine is private to this run: after teardown it must hold no container, network or volume at all.
        containers = _lines(["docker", "ps", "-a", "--format", "{{.Names}}"])
        networks = _lines(["docker", "network", "ls", "--format", "{{.Name}}"])
        networks = [n for n in networks if n not in ("bridge", "host", "none")]
        volumes = _lines(["docker", "volume", "ls", "--format", "{{.Name}}"])
        self.expect(
            not (containers or networks or volumes),
            f"left after teardown: containers {containers}, networks {networks}, volumes {volumes}",
        )

    # --- the run ------------------------------------------------------------------------------------------------
    def run(self) -> int:
        steps = [
            ("deploy", self.deploy),
            ("requests (stable)", self.requests_stable),
            ("engine view (hardening)", self.engine_view),
            ("OPA locked down", self.opa_locked_down),
            ("OPA stopped: gate exit 4", self.opa_stopped),
            ("promote canary", self.promote_canary),
            ("split seen", self.split),
            ("chaos error", self.chaos_error),
            ("promote stable (blocked)", self.promote_blocked),
            ("recover", self.recover),
            ("promote stable (allowed)", self.promote_allowed),
            ("traffic (new stable)", self.after_promotion),
            ("promote canary + rollback", self.rollback),
            ("rollout (3 steps, healthy)", self.rollout_healthy),
            ("rollout (error at step 2: rolled back)", self.rollout_denied),
            ("rollout + abort from a second process", self.rollout_aborted),
            ("status --once", self.status),
            ("audit", self.audit),
            ("every gate decided by OPA", self.gates_by_opa),
            ("undo under traffic", self.undo),
        ]
        self.write_manifest()
        failed = None
        for name, action in steps:
            if not self.timed(name, action):
                failed = name
                break
        if not self.timed("teardown", self.teardown):
            failed = failed or "teardown"
            print(self.compose("down", "-v", "--remove-orphans"), flush=True)
        if failed:
            print(f"\nFAILED step: {failed}", flush=True)
            return 1
        return 0

    def timed(self, name: str, action: Callable[[], None]) -> bool:
        print(f"\n-- {name}", flush=True)
        started = time.monotonic()
        try:
            action()
            ok = True
        except (StepFailed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
            ok = False
            print(f"FAILED step '{name}': {exc}", flush=True)
            print(f"--- docker compose logs --tail 50 (project {PROJECT})", flush=True)
            print(self.compose("logs", "--no-color", "--tail", "50"), flush=True)
        seconds = time.monotonic() - started
        print(f"   {'ok' if ok else 'FAILED'} in {seconds:.1f}s", flush=True)
        with open(self.args.timings, "a", encoding="utf-8") as out:
            out.write(f"story: {name}\t{seconds:.1f}\n")
        return ok


def _lines(cmd: list[str]) -> list[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--swiftdeploy", required=True)
    parser.add_argument("--stable-image", required=True)
    parser.add_argument("--canary-image", required=True)
    parser.add_argument("--nginx-image", required=True)
    parser.add_argument("--opa-image", required=True)
    parser.add_argument("--timings", required=True)
    args = parser.parse_args(argv)
    if not os.environ.get("DOCKER_HOST"):
        print("DOCKER_HOST is not set: run this through scripts/e2e_docker.sh", file=sys.stderr)
        return 2
    return Story(args).run()


if __name__ == "__main__":
    sys.exit(main())
