"""The swarm runtime's nginx.conf on the REAL nginx, without a swarm: what Swarm gives nginx is a DNS name per track
answering every running task's address (endpoint_mode dnsrr) and the tasks themselves. Here a test DNS server
(support.DnsServer, standing in for Docker's 127.0.0.11) answers the names, and the "tasks" are real demo API
processes on different loopback addresses with the same port (127.0.0.2, 127.0.0.3, ...: Linux routes all of
127.0.0.0/8 to lo), as tasks on an overlay network share services.port on their own addresses. Each task has its
own APP_VERSION, so a response names the task that served it (X-App-Version), and each task's own /metrics says
what it served.

The generated file runs with only the substitutions support.SwarmNginx lists (resolver address, admin socket path,
pid/temp/log paths, public listen on 127.0.0.1). Proven: public requests spread over every task a name answers,
the canary weight split across the two names, `/task/<ip>/...` on the admin socket reaching exactly that task,
nginx following tasks added to and removed from DNS without a reload, a killed task still in DNS costing no request,
a task that answers no SYN (a lost node) costing none either, a track without tasks being a JSON 502 for that
track only, and the all_to_canary handover. Bounded request counts, loopback-only traffic, every process stopped
by the fixtures' finalizers; no timing assertion (the polls are bounded waits).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support import DemoApi, DnsServer, SwarmNginx, free_port

from swiftdeploy.manifest import load_manifest

STABLE_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
CANARY_HOSTS = ["127.0.0.5", "127.0.0.6"]
SPARE_HOST = "127.0.0.7"  # a task Swarm starts later (test_nginx_follows_tasks_added_and_removed)
VICTIM_HOST = "127.0.0.8"  # a task that dies while DNS still answers it (test_a_killed_task_costs_no_request)
SILENT_HOST = "127.0.0.9"  # a task on a lost node: SYNs unanswered (test_a_task_that_never_answers_costs_no_request)
ALL_HOSTS = [*STABLE_HOSTS, *CANARY_HOSTS, SPARE_HOST, VICTIM_HOST, SILENT_HOST]
WEIGHT = 30
FOLLOW_DEADLINE = 10.0  # seconds a poll waits for nginx to act on a DNS change (a bound, not an assertion)
SERVED = re.compile(r'^http_requests_total\{method="GET",path="/",status_code="200"\} ([0-9.e+]+)$', re.M)


def _shared_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (the tasks' common services.port)."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on all of {hosts}")


class Tasks:
    """The demo API "tasks" of the module, by address; `start` adds one, every one is stopped at the end."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.by_host: dict[str, DemoApi] = {}

    def start(self, host: str, mode: str) -> DemoApi:
        # The version names the task: its responses say which task served them.
        version = f"{'2' if mode == 'canary' else '1'}.0.{host.rsplit('.', 1)[1]}"
        self.by_host[host] = DemoApi(self.folder, mode, version, host=host, port=self.port)
        return self.by_host[host]

    def host_of(self, version: str) -> str:
        return next(host for host, api in self.by_host.items() if api.version == version)

    def served(self, host: str) -> int:
        """GET / answered 200 by that task, from its own /metrics (read directly, not through nginx)."""
        text = httpx.get(f"{self.by_host[host].url}/metrics", timeout=5.0).text
        found = SERVED.search(text)
        return int(float(found.group(1))) if found else 0

    def stop_all(self) -> None:
        for api in self.by_host.values():
            api.stop()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Iterator[Tasks]:
    folder = tmp_path_factory.mktemp("swarm-tasks")
    running = Tasks(folder, _shared_port(ALL_HOSTS))
    modes = {host: "stable" for host in [*STABLE_HOSTS, SPARE_HOST]} | {host: "canary" for host in CANARY_HOSTS}
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:  # started side by side; every one started is stopped
            for started in [pool.submit(running.start, host, mode) for host, mode in modes.items()]:
                started.result()
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer({"app": STABLE_HOSTS, "app-canary": CANARY_HOSTS}) as server:
        yield server


@pytest.fixture
def swarm_manifest(tmp_path: Path, tasks: Tasks) -> Callable[..., object]:
    """swarm_manifest(mode="canary") -> a swarm-runtime manifest whose tasks listen on the tasks' port."""

    def write(mode: str = "canary"):
        folder = tmp_path / f"project-{mode}"
        folder.mkdir()
        (folder / "manifest.yaml").write_text(
            f"services: {{name: app, image: demo:1, port: {tasks.port}, mode: {mode}, replicas: 3}}\n"
            f"canary: {{weight: {WEIGHT}, replicas: 2}}\n"
            f"nginx: {{port: {free_port()}, proxy_timeout: 5s}}\n"
            "policy: {engine: embedded}\n"
            "runtime: swarm\n",
            encoding="utf-8",
        )
        return load_manifest(folder / "manifest.yaml")

    return write


@pytest.fixture
def swarm_nginx(nginx_binary: str, tmp_path: Path, dns: DnsServer) -> Iterator[Callable[..., SwarmNginx]]:
    """swarm_nginx(m, all_to_canary=False) -> the real nginx on m's swarm nginx.conf, asking `dns`; stopped at
    the end of the test."""
    started: list[SwarmNginx] = []

    def start(m, *, all_to_canary: bool = False) -> SwarmNginx:
        state = tmp_path / f"nginx-{len(started)}"
        started.append(SwarmNginx(nginx_binary, m, state, dns.address, all_to_canary=all_to_canary))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def _public(nginx: SwarmNginx, n: int, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """`n` GET / on the public listener, one connection each (so nginx's workers share them)."""
    with httpx.Client(base_url=nginx.public, timeout=10.0, headers={"Connection": "close", **(headers or {})}) as c:
        return [c.get("/") for _ in range(n)]


def _by_task(tasks: Tasks, responses: list[httpx.Response]) -> Counter[str]:
    assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]
    return Counter(tasks.host_of(r.headers["x-app-version"]) for r in responses)


def _served_now(tasks: Tasks, hosts: list[str]) -> dict[str, int]:
    return {host: tasks.served(host) for host in hosts}


def test_the_dns_stand_in_answers_like_a_dns_server(dns):
    """The stand-in for Docker's DNS: A records of the names it holds (the question echoed, the query's id),
    NXDOMAIN otherwise, no answer at all to a malformed packet, and it keeps serving after one."""
    port = int(dns.address.rsplit(":", 1)[1])

    def ask(packet: bytes) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.sendto(packet, ("127.0.0.1", port))
            try:
                return sock.recv(512)
            except TimeoutError:
                return None

    def query(name: bytes, ident: int = 0x1234) -> bytes:
        labels = b"".join(bytes([len(part)]) + part for part in name.split(b"."))
        return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)

    reply = ask(query(b"app"))
    assert reply is not None
    ident, flags, questions, answers = struct.unpack("!4H", reply[:8])
    assert (ident, flags & 0x800F, questions, answers) == (0x1234, 0x8000, 1, len(STABLE_HOSTS))
    records = reply[len(query(b"app")) :]  # after the echoed question: 16 bytes per A record, the address last
    assert [socket.inet_ntoa(records[i + 12 : i + 16]) for i in range(0, len(records), 16)] == STABLE_HOSTS
    assert struct.unpack("!H", ask(query(b"nowhere"))[2:4])[0] & 0xF == 3  # NXDOMAIN
    for junk in (b"", b"\x00" * 5, query(b"app")[:15], b"\xff" * 64, query(b"a" * 64), b"\x12\x34\x81\x00" + b"\0" * 8):
        assert ask(junk) is None  # too short, cut, a reply, an over-long label: silence
    assert ask(query(b"app-canary", 7))[:2] == b"\x00\x07"  # still serving


def test_public_requests_spread_over_every_stable_task(tasks, swarm_manifest, swarm_nginx):
    nginx = swarm_nginx(swarm_manifest("stable"))
    before = _served_now(tasks, STABLE_HOSTS)
    seen = _by_task(tasks, _public(nginx, 90))
    after = _served_now(tasks, STABLE_HOSTS)
    # Every task the name answers served requests, and what each task counted itself is what the client saw.
    assert set(seen) == set(STABLE_HOSTS), seen
    assert {host: after[host] - before[host] for host in STABLE_HOSTS} == dict(seen)
    # In stable mode the canary name is never asked, and the canary tasks serve nothing.
    assert not set(seen) & set(CANARY_HOSTS)


def test_canary_weight_splits_across_the_two_names(tasks, swarm_manifest, swarm_nginx):
    nginx = swarm_nginx(swarm_manifest("canary"))
    hosts = STABLE_HOSTS + CANARY_HOSTS
    before = _served_now(tasks, hosts)
    n = 300
    seen = _by_task(tasks, _public(nginx, n))
    after = _served_now(tasks, hosts)
    assert {host: after[host] - before[host] for host in hosts if after[host] != before[host]} == dict(seen)
    canary = sum(seen[host] for host in CANARY_HOSTS)
    # Binomial(300, 0.30): mean 90, sd 7.9; the bounds are 5 sd away (a false failure about once in 3 million runs).
    assert 50 <= canary <= 130, seen
    assert set(seen) == set(hosts), seen  # both names, and every task behind each of them
    # The pins of the public listener still hold per name.
    assert set(_by_task(tasks, _public(nginx, 20, {"X-Canary": "always"}))) <= set(CANARY_HOSTS)
    assert set(_by_task(tasks, _public(nginx, 20, {"X-Canary": "never"}))) <= set(STABLE_HOSTS)


def test_admin_task_paths_reach_exactly_that_task(tasks, swarm_manifest, swarm_nginx):
    nginx = swarm_nginx(swarm_manifest("canary"))
    _public(nginx, 30)
    with nginx.admin() as admin:
        for host in STABLE_HOSTS + CANARY_HOSTS:
            api = tasks.by_host[host]
            metrics = admin.get(f"/task/{host}/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["x-app-version"] == api.version  # that task, not another of its track
            direct = httpx.get(f"{api.url}/metrics", timeout=5.0).text
            assert SERVED.findall(metrics.text) == SERVED.findall(direct)  # its own counts, read through nginx
            health = admin.get(f"/task/{host}/healthz")
            assert health.status_code == 200 and health.headers["x-app-version"] == api.version
            assert health.json()["mode"] == api.mode
        # The per-track paths reach a task of that track through its name.
        assert tasks.host_of(admin.get("/stable/metrics").headers["x-app-version"]) in STABLE_HOSTS
        assert tasks.host_of(admin.get("/canary/healthz").headers["x-app-version"]) in CANARY_HOSTS
        # An address with no task: nginx's own JSON 502 (refused at once on loopback), not another task's answer.
        gone = admin.get("/task/127.0.0.99/metrics")
        assert gone.status_code == 502 and gone.json()["code"] == 502 and "x-app-version" not in gone.headers
        # Only IPv4 addresses: a name or anything else is the admin listener's 404.
        assert admin.get("/task/app/metrics").status_code == 404
        assert admin.get("/task/127.0.0.2/other").status_code == 404
    # The admin paths are not on the public listener.
    with httpx.Client(base_url=nginx.public, timeout=5.0) as public:
        assert public.get(f"/task/{STABLE_HOSTS[0]}/metrics").status_code != 200


def _poll(nginx: SwarmNginx, tasks: Tasks, done: Callable[[Counter[str], list[str]], bool], what: str) -> None:
    """Requests in batches of 10 until `done(seen so far, hosts of the last 30)` holds; fails after
    FOLLOW_DEADLINE seconds (a bounded wait: at most a few hundred requests)."""
    seen: Counter[str] = Counter()
    recent: list[str] = []
    deadline = time.monotonic() + FOLLOW_DEADLINE
    while time.monotonic() < deadline:
        batch = _by_task(tasks, _public(nginx, 10))
        seen.update(batch)
        recent = (recent + list(batch.elements()))[-30:]
        if done(seen, recent):
            return
        time.sleep(0.1)
    raise AssertionError(f"nginx did not {what} within {FOLLOW_DEADLINE:.0f} s: served {dict(seen)}")


def test_nginx_follows_tasks_added_and_removed(tasks, dns, swarm_manifest, swarm_nginx):
    """Swarm starts a task (the name answers it) and stops one (the name no longer does): nginx follows by itself,
    with no reload: the resolver re-asks every second."""
    nginx = swarm_nginx(swarm_manifest("stable"))
    first, rest = STABLE_HOSTS[0], STABLE_HOSTS[1:]
    master = nginx.proc.pid
    seen = _by_task(tasks, _public(nginx, 60))
    assert SPARE_HOST not in seen  # running, but not in DNS: never reached

    # A new task: the name answers it too.
    dns.set("app", [*STABLE_HOSTS, SPARE_HOST])
    _poll(nginx, tasks, lambda seen, _: seen[SPARE_HOST] > 0, f"reach the new task {SPARE_HOST}")

    # A task leaves: it still runs (so only DNS can keep nginx away from it), the name no longer answers it.
    asked_before = dns.askers("app")
    generation = dns.set("app", [*rest, SPARE_HOST])

    def settled(_: Counter[str], recent: list[str]) -> bool:
        # Every nginx worker that had resolved the name asked again after the change (each has its own cache).
        return asked_before <= dns.askers("app", since=generation) and first not in recent and len(recent) == 30

    _poll(nginx, tasks, settled, f"stop sending to the removed task {first}")
    before = tasks.served(first)
    seen = _by_task(tasks, _public(nginx, 60))
    assert first not in seen and set(seen) == {*rest, SPARE_HOST}, seen
    assert tasks.served(first) == before  # the removed task's own count did not move
    assert nginx.proc.poll() is None and nginx.proc.pid == master  # the same nginx throughout: no restart
    assert "reconfiguring" not in nginx.error_log.read_text(errors="replace")  # and no reload


def test_a_killed_task_costs_no_request(tasks, dns, swarm_manifest, swarm_nginx):
    """A task that dies while the name still answers it: nginx's connect to it fails and the request goes to the
    next address the name answered (proxy_next_upstream error timeout, the default). On loopback the dead port
    refuses the connection at once; a task on a lost node answers no SYN, and nginx moves on after the 1 s
    proxy_connect_timeout of the swarm target instead. Allowed failures: none, since nothing was in flight on the
    task when it died (a request in flight on a dying task is lost: only those)."""
    victim = tasks.start(VICTIM_HOST, "stable")
    dns.set("app", [*STABLE_HOSTS, VICTIM_HOST])
    nginx = swarm_nginx(swarm_manifest("stable"))
    _poll(nginx, tasks, lambda seen, _: seen[VICTIM_HOST] > 0, f"reach {VICTIM_HOST}")
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)

    responses = _public(nginx, 120)
    failed = [r for r in responses if r.status_code != 200]
    assert failed == [], [(r.status_code, r.text) for r in failed]
    assert set(_by_task(tasks, responses)) == set(STABLE_HOSTS)
    # nginx did try the dead task (the name still answers it) and moved on: the retries are in its logs.
    errors = nginx.error_log.read_text(errors="replace")
    assert "connect() failed (111: Connection refused) while connecting to upstream" in errors
    assert f"{VICTIM_HOST}:{tasks.port}" in errors
    retried = [line for line in nginx.access_log.read_text().splitlines() if f"{VICTIM_HOST}:{tasks.port}, " in line]
    assert retried and all(" | 200 | " in line for line in retried)  # "<dead>, <next>" in $upstream_addr


def test_all_to_canary_sends_everything_to_the_canary_name(tasks, swarm_manifest, swarm_nginx):
    """The handover target of `promote stable`: every route (the split, both pins, the stable admin paths) reaches
    the canary tasks, whatever the stable name answers."""
    nginx = swarm_nginx(swarm_manifest("canary"), all_to_canary=True)
    stable_before = _served_now(tasks, STABLE_HOSTS)
    seen = _by_task(tasks, _public(nginx, 60))
    seen += _by_task(tasks, _public(nginx, 20, {"X-Canary": "never"}))
    seen += _by_task(tasks, _public(nginx, 20, {"X-Canary": "always"}))
    assert set(seen) == set(CANARY_HOSTS), seen
    assert _served_now(tasks, STABLE_HOSTS) == stable_before
    with nginx.admin() as admin:
        for _ in range(10):
            assert tasks.host_of(admin.get("/stable/healthz").headers["x-app-version"]) in CANARY_HOSTS


@contextlib.contextmanager
def _silent_task(host: str, port: int) -> Iterator[None]:
    """`host:port` answers no SYN, like a task on a node that is gone: a listener with a full accept queue (backlog
    0 and one connection held, never accepted), so the kernel drops every further SYN. No firewall rule involved."""
    with socket.socket() as listener, socket.socket() as held:
        listener.bind((host, port))
        listener.listen(0)
        held.connect((host, port))
        with socket.socket() as probe:  # the next connect gets no answer at all
            probe.settimeout(0.5)
            with pytest.raises(TimeoutError):
                probe.connect((host, port))
        yield


def test_a_task_that_never_answers_costs_no_request(tasks, dns, swarm_manifest, swarm_nginx):
    """A task on a lost node is still in DNS until Swarm notices, and its address answers nothing: nginx gives up
    on it after the swarm target's 1 s proxy_connect_timeout and the request goes to the next address. Every
    request succeeds; those that tried the silent task first are slower (not asserted: no timing)."""
    nginx = swarm_nginx(swarm_manifest("stable"))
    with _silent_task(SILENT_HOST, tasks.port):
        dns.set("app", [*STABLE_HOSTS, SILENT_HOST])
        silent = f"{SILENT_HOST}:{tasks.port}, "
        responses: list[httpx.Response] = []
        while len(responses) < 40 and silent not in nginx.access_log.read_text():
            responses += _public(nginx, 4)  # at most 40 requests, each at most one 1 s timeout slower
    assert silent in nginx.access_log.read_text(), "nginx never tried the silent task first in 40 requests"
    assert set(_by_task(tasks, responses)) <= set(STABLE_HOSTS)  # all 200, none from the silent address
    errors = nginx.error_log.read_text(errors="replace")
    assert "upstream timed out (110: Connection timed out) while connecting to upstream" in errors
    assert f"{SILENT_HOST}:{tasks.port}" in errors


def test_a_track_without_tasks_is_a_json_502_until_it_has_one(tasks, dns, swarm_manifest, swarm_nginx):
    """A name with no task (Docker's DNS answers NXDOMAIN) is nginx's JSON 502 for that track only; the other
    track keeps serving, and the track serves again as soon as its name answers a task (no reload)."""
    m = swarm_manifest("canary")
    nginx = swarm_nginx(m)
    dns.set("app-canary", [])
    canary_until = _pinned_until(nginx, "always")
    answer = canary_until(lambda r: r.status_code != 200)  # a worker may hold the answer of a moment ago (1 s)
    assert answer.status_code == 502
    assert answer.json() == {
        "error": "bad gateway: the service did not answer",
        "code": 502,
        "service": "app",
        "contact": m.nginx.contact,
    }
    assert set(_by_task(tasks, _public(nginx, 20, {"X-Canary": "never"}))) <= set(STABLE_HOSTS)
    dns.set("app-canary", CANARY_HOSTS)
    answer = canary_until(lambda r: r.status_code == 200)
    assert answer.status_code == 200 and tasks.host_of(answer.headers["x-app-version"]) in CANARY_HOSTS


def _pinned_until(nginx: SwarmNginx, pin: str) -> Callable[[Callable[[httpx.Response], bool]], httpx.Response]:
    """until(done) -> the first response to `X-Canary: <pin>` requests, one every 0.2 s, for which done() holds
    (or the last one after FOLLOW_DEADLINE seconds: the caller's assertion then fails)."""

    def until(done: Callable[[httpx.Response], bool]) -> httpx.Response:
        deadline = time.monotonic() + FOLLOW_DEADLINE
        while not done(answer := _public(nginx, 1, {"X-Canary": pin})[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        return answer

    return until
