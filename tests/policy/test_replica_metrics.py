"""A track's metrics summed over its replicas (issue 17: the swarm runtime runs several tasks per track), against
real demo API processes on 127.0.0.1: the summed window equals what each replica served, a restarted replica resets
only its own counters, a replica that stops answering fails the track's scrape, one gone at the end of a window is
reported lost and every promotion path refuses it, and the single-URL runtimes (docker, local) are unchanged.

The Docker engine is not here: `Replicas` and `SocketTasks` below stand in for SwarmRuntime.task_urls (which lists
the running tasks from the engine), registered in RUNTIMES; every URL they return reaches a real demo API, directly
or (the last test) through the real nginx on the generated swarm nginx.conf, over its unix admin socket.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from support import DemoApi
from support import write_manifest as write_stack_manifest

from swiftdeploy.errors import OperationFailed
from swiftdeploy.localhttp import unix_url
from swiftdeploy.manifest import load_manifest
from swiftdeploy.metrics import (
    admin_url,
    canary_input,
    require_seen,
    scrape_replicas,
    scrape_track,
    track_urls,
    window,
)
from swiftdeploy.runtime import RUNTIMES, admin_socket


class Replicas:
    """Stands in for a runtime with replicas: `task_urls` answers from `tasks` ({track: {task id: base URL}}), and
    raises OperationFailed for a track with no task, as the swarm runtime's contract says."""

    tasks: ClassVar[dict[str, dict[str, str]]] = {}
    states: ClassVar[dict[str, Any]] = {}  # `health`: what the engine says of each service

    def health(self, m: Any) -> dict[str, Any]:
        return dict(self.states)

    def task_urls(self, m: Any, track: str, what: str) -> dict[str, str]:
        urls = {task: f"{base}/{what}" for task, base in self.tasks.get(track, {}).items()}
        if not urls:
            raise OperationFailed(f"the {track} track has no running task")
        return urls


@pytest.fixture
def replicated(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, str]]]:
    """The local runtime's spec with `replicas=True` and `Replicas` as its implementation; yields its task table."""
    spec = dataclasses.replace(RUNTIMES["local"], replicas=True, impl=f"{Replicas.__module__}:Replicas")
    monkeypatch.setitem(RUNTIMES, "local", spec)
    monkeypatch.setattr(Replicas, "tasks", {})
    monkeypatch.setattr(Replicas, "states", {})
    yield Replicas.tasks


def hit(api: DemoApi, n: int, path: str = "/") -> dict[int, int]:
    """`n` GETs to one replica; {status: count} of what it answered."""
    seen: dict[int, int] = {}
    with httpx.Client(base_url=api.url, timeout=5.0, trust_env=False) as client:
        for _ in range(n):
            status = client.get(path).status_code
            seen[status] = seen.get(status, 0) + 1
    return seen


def metrics_urls(apis: dict[str, DemoApi]) -> dict[str, str]:
    return {task: f"{api.url}/metrics" for task, api in apis.items()}


@pytest.fixture
def three(demo_api: Callable[..., DemoApi]) -> dict[str, DemoApi]:
    return {task: demo_api("canary") for task in ("a", "b", "c")}


def test_the_summed_window_equals_what_each_replica_served(three: dict[str, DemoApi]) -> None:
    hit(three["a"], 4)  # before the window: must not count
    before = scrape_replicas(metrics_urls(three), name="canary track")
    assert sorted(before.parts) == ["a", "b", "c"]
    httpx.post(f"{three['b'].url}/chaos", json={"mode": "error", "rate": 1.0}, timeout=5.0)  # b answers 500
    served = {"a": hit(three["a"], 7), "b": hit(three["b"], 19), "c": hit(three["c"], 3)}
    assert served == {"a": {200: 7}, "b": {500: 19}, "c": {200: 3}}
    after = scrape_replicas(metrics_urls(three), name="canary track")

    w = window(before, after)
    assert (w.requests, w.errors) == (7 + 19 + 3, 19)
    assert w.replicas == 3 and w.replicas_lost == w.replicas_new == w.replicas_restarted == ()
    for task, api_served in served.items():  # each replica's own window is what it served
        assert window(before.parts[task], after.parts[task]).requests == sum(api_served.values())
    # the histogram is summed bucket by bucket: the +Inf buckets of "/" add up to the requests of the window
    key = ("GET", "/", math.inf)
    inf = {t: after.parts[t].buckets[key] - before.parts[t].buckets.get(key, 0.0) for t in three}
    assert inf == {"a": 7, "b": 19, "c": 3}
    assert after.buckets[key] == sum(p.buckets[key] for p in after.parts.values())
    assert max(w.slower_than.values()) <= w.requests and w.p99_ms is not None
    assert after.gauges["chaos_active"] == 2  # the strongest chaos of any replica (b: error)


def test_a_restarted_replica_resets_only_its_own_counters(
    three: dict[str, DemoApi], demo_api: Callable[..., DemoApi]
) -> None:
    for api in three.values():
        hit(api, 10)  # before the window: a reset applied to every replica would count these
    before = scrape_replicas(metrics_urls(three))
    hit(three["a"], 5)
    hit(three["b"], 6)  # served by b's first process: lost with it when it restarts (as PromQL's rate() loses it)
    hit(three["c"], 4)
    three["b"].stop()
    three["b"] = demo_api("canary", port=three["b"].port)  # a new process on the same port: same task, new counters
    hit(three["b"], 3)
    hit(three["a"], 2)
    after = scrape_replicas(metrics_urls(three))

    w = window(before, after)
    assert w.requests == 5 + 2 + 3 + 4
    assert w.replicas_restarted == ("b",) and w.restarted and w.replicas_lost == ()


def test_a_replica_that_stops_answering_fails_the_track(three: dict[str, DemoApi]) -> None:
    three["c"].stop()
    with pytest.raises(OperationFailed, match=r"replica c of the canary track: cannot scrape http://127\.0\.0\.1"):
        scrape_replicas(metrics_urls(three), name="canary track")
    with pytest.raises(OperationFailed, match="has no replica to scrape"):
        scrape_replicas({}, name="canary track")


def test_the_promotion_paths_read_every_replica_and_refuse_a_lost_one(
    replicated: dict[str, dict[str, str]], three: dict[str, DemoApi], demo_api: Callable[..., DemoApi], write_manifest
) -> None:
    m = write_manifest()
    stable = demo_api("stable")
    replicated["stable"] = {"s1": stable.url}
    replicated["canary"] = {task: api.url for task, api in three.items()}
    assert track_urls(m, "canary") == metrics_urls(three)

    # canary_input: the traffic of the window goes to every replica; one more replica joins during it
    joined = demo_api("canary")
    hit(joined, 4)

    def traffic(_seconds: float) -> None:
        hit(three["a"], 2)
        hit(three["b"], 5)
        hit(three["c"], 1)
        hit(stable, 6)
        replicated["canary"]["d"] = joined.url  # new at the end: counts from zero (all 4 of its requests)

    data = canary_input(m, 30, sleep=traffic)
    assert data["canary"]["requests"] == 2 + 5 + 1 + 4 and data["stable"]["requests"] == 6

    # a replica gone at the end: its requests in the window are unseen, canary_input refuses
    def lose_c(_seconds: float) -> None:
        hit(three["c"], 9)
        del replicated["canary"]["c"]

    with pytest.raises(OperationFailed, match="replica c of the canary disappeared during the window"):
        canary_input(m, 30, sleep=lose_c)

    # the sequential watch of `promote stable` / `rollout` refuses the same way (no verdict, no allow)
    from swiftdeploy.judge import watch_canary

    replicated["canary"]["c"] = three["c"].url
    with pytest.raises(OperationFailed, match="replica b of the canary disappeared during the window"):
        watch_canary(m, 30, interval=1, sleep=lambda _s: replicated["canary"].pop("b"))

    # a replica that does not answer: no figures for the track at all
    three["a"].stop()
    with pytest.raises(OperationFailed, match="replica a of the canary track"):
        canary_input(m, 30, sleep=lambda _s: None)
    replicated["canary"].clear()
    with pytest.raises(OperationFailed, match="no running task"):
        scrape_track(m, "canary")


def test_status_shows_the_sum_over_replicas(
    replicated: dict[str, dict[str, str]],
    three: dict[str, DemoApi],
    demo_api: Callable[..., DemoApi],
    local_nginx: Callable[..., Any],
    tmp_path: Path,
) -> None:
    from swiftdeploy.dashboard import StatusCollector

    path = write_stack_manifest(tmp_path)
    path.write_text(path.read_text().replace("  version: 1.0.0\n", "  version: 1.0.0\n  mode: canary\n", 1))
    m = load_manifest(path)
    assert m.services.mode == "canary"
    stable = demo_api("stable")
    replicated["stable"] = {"s1": stable.url}
    replicated["canary"] = {task: api.url for task, api in three.items()}
    local_nginx(m, stable.port, three["a"].port)  # the admin listener answers the health checks (one replica)
    collector = StatusCollector(m, host_facts=dict)
    first = collector.collect()
    assert first.tracks["canary"].replicas == 3 and first.tracks["stable"].replicas == 1
    hit(three["a"], 3)
    hit(three["b"], 8)
    hit(three["c"], 2)
    snap = collector.collect()
    canary = snap.tracks["canary"]
    assert canary.state == "up" and canary.interval is not None and canary.interval["requests"] == 3 + 8 + 2
    assert canary.window is not None and canary.window["input"]["requests"] == 13
    assert canary.to_dict()["replicas"] == 3 and canary.tasks_degraded is None
    # the engine says a task does not serve (its node is lost): status marks the track degraded with its words
    from swiftdeploy.runtime.base import ServiceHealth

    words = "2/3 tasks running (manager, worker-1); .3 on worker-2: running (node down)"
    Replicas.states["app-canary"] = ServiceHealth("app-canary", True, False, words)
    degraded = collector.collect().tracks["canary"]
    assert degraded.tasks_degraded == words and degraded.to_dict(trends=False)["tasks_degraded"] == words
    Replicas.states.clear()
    # a replica replaced: the window restarts (its requests are unseen), the canary is not judged on it
    del replicated["canary"]["c"]
    lost = collector.collect()
    assert lost.tracks["canary"].replicas_lost == ["c"] and lost.tracks["canary"].window is None
    assert lost.decisions["canary"].verdict == "collecting baseline"
    assert "disappeared" in (lost.decisions["canary"].message or "")


def test_single_url_runtimes_are_unchanged(write_manifest) -> None:
    for runtime in ("local", "docker"):
        m = write_manifest(runtime=runtime, admin_port=18082)
        for track in ("stable", "canary"):
            assert track_urls(m, track) == {track: f"http://127.0.0.1:18082/{track}/metrics"}
            assert admin_url(m, track, "metrics") == f"http://127.0.0.1:18082/{track}/metrics"


def test_a_unix_socket_admin_listener_gets_http_unix_urls(write_manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    m = write_manifest()
    monkeypatch.setitem(RUNTIMES, "local", dataclasses.replace(RUNTIMES["local"], admin="unix"))
    assert admin_socket(m) == m.state_dir / "admin" / "admin.sock"
    assert admin_url(m, "canary", "metrics") == unix_url(admin_socket(m), "/canary/metrics")
    assert admin_url(m, "canary", "metrics").startswith("http+unix://%2F")


def test_a_single_url_scrape_has_no_parts(demo_api: Callable[..., DemoApi]) -> None:
    from swiftdeploy.metrics import scrape

    api = demo_api("canary")
    before = scrape(f"{api.url}/metrics")
    hit(api, 5)
    after = scrape(f"{api.url}/metrics")
    w = window(before, after)
    assert before.parts == {} and w.requests == 5
    assert (w.replicas, w.replicas_lost, w.replicas_new, w.replicas_restarted) == (0, (), (), ())
    require_seen({"canary": w})  # nothing lost: no error


# --- the whole path on the swarm runtime's own nginx.conf ----------------------------------------------------------

CANARY_TASKS = ["127.0.0.31", "127.0.0.32", "127.0.0.33"]  # loopback addresses: one "task" each, one shared port
STABLE_TASKS = ["127.0.0.34"]


class SocketTasks:
    """Stands in for SwarmRuntime.task_urls (which reads the engine): the same URLs it builds,
    `<admin_base(m)>/task/<task address>/<what>`, for the "tasks" in `hosts`."""

    hosts: ClassVar[dict[str, list[str]]] = {}

    def task_urls(self, m: Any, track: str, what: str) -> dict[str, str]:
        from swiftdeploy.metrics import admin_base

        return {
            f"{track}.{i + 1} {host}": f"{admin_base(m)}/task/{host}/{what}" for i, host in enumerate(self.hosts[track])
        }


def _shared_port(hosts: list[str]) -> int:
    import socket

    from support import free_port

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


def test_a_swarm_track_is_summed_through_the_real_admin_socket(
    nginx_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated swarm nginx.conf on the real nginx (support.SwarmNginx: Docker's DNS stood in by a DnsServer)
    listening on admin_socket(m), three canary "tasks" (real demo APIs on their own loopback addresses): public
    traffic split by nginx plus uneven direct traffic; the summed window read through http+unix:// and
    /task/<address>/metrics equals what each task counted itself."""
    from support import DnsServer, SwarmNginx, free_port

    from swiftdeploy.metrics import admin_base

    port = _shared_port(CANARY_TASKS + STABLE_TASKS)
    apis: dict[str, DemoApi] = {}
    try:
        for host in CANARY_TASKS + STABLE_TASKS:
            mode = "canary" if host in CANARY_TASKS else "stable"
            apis[host] = DemoApi(tmp_path, mode, f"2.0.{host.rsplit('.', 1)[1]}", host=host, port=port)
        project = tmp_path / "p"
        project.mkdir()
        (project / "manifest.yaml").write_text(
            f"services: {{name: app, image: demo:1, port: {port}, mode: canary, replicas: 1}}\n"
            f"canary: {{weight: 50, replicas: 3}}\nnginx: {{port: {free_port()}, proxy_timeout: 5s}}\n"
            "policy: {engine: embedded}\nruntime: swarm\n",
            encoding="utf-8",
        )
        m = load_manifest(project / "manifest.yaml")
        spec = dataclasses.replace(RUNTIMES["swarm"], impl=f"{SocketTasks.__module__}:SocketTasks")
        assert spec.replicas and spec.admin == "unix"
        monkeypatch.setitem(RUNTIMES, "swarm", spec)
        monkeypatch.setattr(SocketTasks, "hosts", {"canary": CANARY_TASKS, "stable": STABLE_TASKS})
        with (
            DnsServer({"app": STABLE_TASKS, "app-canary": CANARY_TASKS}) as dns,
            SwarmNginx(nginx_binary, m, admin_socket(m).parent, dns.address) as nginx,
        ):
            assert admin_base(m).startswith("http+unix://") and nginx.socket == admin_socket(m)
            own = {host: scrape_replicas({host: f"{apis[host].url}/metrics"}) for host in CANARY_TASKS}
            before = scrape_track(m, "canary")
            assert len(before.parts) == 3
            with httpx.Client(base_url=nginx.public, timeout=10.0, headers={"Connection": "close"}) as client:
                modes = [client.get("/").headers.get("x-mode") for _ in range(40)]
            for host, n in zip(CANARY_TASKS, (6, 0, 13), strict=True):
                hit(apis[host], n)
            after = scrape_track(m, "canary")
            served = {
                host: window(own[host], scrape_replicas({host: f"{apis[host].url}/metrics"})).requests
                for host in CANARY_TASKS
            }
            w = window(before, after)
            assert "canary" in modes and "stable" in modes  # nginx split the public traffic
            assert w.replicas == 3 and w.replicas_lost == ()
            assert w.requests == sum(served.values()) == modes.count("canary") + 6 + 13
            assert scrape_track(m, "stable").parts.keys() == {f"stable.1 {STABLE_TASKS[0]}"}
    finally:
        for api in apis.values():
            api.stop()


def test_chaos_reaches_every_replica(
    replicated: dict[str, dict[str, str]], three: dict[str, DemoApi], write_manifest
) -> None:
    """`chaos` on a runtime with replicas goes to each one: a recover through one balanced admin URL could leave
    another replica failing."""
    from swiftdeploy.ops.chaos import chaos

    m = write_manifest()
    replicated["canary"] = {task: api.url for task, api in three.items()}

    def modes() -> list[str]:
        return [httpx.get(f"{api.url}/chaos", timeout=5.0).json()["mode"] for api in three.values()]

    assert chaos(m, "canary", "error", rate=0.5).state["mode"] == "error"
    assert modes() == ["error"] * 3
    chaos(m, "canary", "recover")
    assert modes() == ["none"] * 3
