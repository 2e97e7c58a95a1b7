"""dashboard.refreshes, the one status refresh loop (live `status`, `status --once`, the demo's sampler), against
real demo API processes; and the demo's sampler thread deciding with the embedded engine like every caller."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from swiftdeploy import dashboard, history
from swiftdeploy.errors import OperationFailed
from swiftdeploy.manifest import load_manifest
from swiftdeploy.policy import evaluate


def _records(m) -> list[dict]:
    return list(history.read(m.history_path)) if m.history_path.exists() else []


def test_every_refresh_is_recorded_and_yielded(demo_api, manifest_file) -> None:
    m = load_manifest(manifest_file("stable"))
    stable = demo_api("stable")
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url})
    seen = [r.snapshot for r in dashboard.refreshes(collector, 0.2, count=3)]
    assert [s.baseline for s in seen] == [True, False, False]
    assert all(s.interval_seconds > 0 for s in seen[1:])
    records = _records(m)
    assert [r["event"] for r in records] == ["status"] * 3
    assert [r["interval_seconds"] for r in records] == [s.interval_seconds for s in seen]


def test_the_baseline_can_be_left_out_and_stop_ends_the_loop(demo_api, manifest_file) -> None:
    m = load_manifest(manifest_file("stable"))
    stable = demo_api("stable")
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url})
    stop = threading.Event()
    seen = []
    for refresh in dashboard.refreshes(collector, 0.2, record_baseline=False, stop=stop):
        seen.append(refresh.snapshot)
        if len(seen) == 2:
            stop.set()  # the loop returns at its next wait: no third refresh
    assert len(seen) == 2
    (record,) = _records(m)
    assert record["interval_seconds"] == seen[1].interval_seconds


def test_a_record_that_cannot_be_written_is_reported_not_fatal(demo_api, manifest_file) -> None:
    m = load_manifest(manifest_file("stable"))
    stable = demo_api("stable")
    m.history_path.mkdir(parents=True)  # a folder where the file should be: every append fails
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url})
    refreshes = list(dashboard.refreshes(collector, 0.1, count=2))
    assert len(refreshes) == 2
    assert all(isinstance(r.record_error, OperationFailed) for r in refreshes)
    assert refreshes[1].snapshot.tracks["stable"].state == "up"
    with pytest.raises(OperationFailed):  # status --once: the one record it promises must be written
        dashboard.snapshot(dashboard.StatusCollector(m, urls={"stable": stable.url}), 0.1)


def test_snapshot_has_real_rates_and_records_only_the_second_refresh(demo_api, manifest_file) -> None:
    m = load_manifest(manifest_file("stable"))
    stable = demo_api("stable")
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url})
    snap = dashboard.snapshot(collector, 0.3)
    assert not snap.baseline and snap.interval_seconds > 0
    (record,) = _records(m)
    assert record["tracks"]["stable"]["interval"] == snap.tracks["stable"].interval


def test_demo_sampler_thread_decides_with_the_embedded_engine(
    demo_api, manifest_file, local_nginx, healthy_host
) -> None:
    from swiftdeploy.ops.demo import _StatusSampler

    m = load_manifest(manifest_file("stable"))
    stable = demo_api("stable")
    local_nginx(m, stable.port)
    # The main thread has an embedded engine cached already (what the demo's gates leave behind); a regorus engine
    # used from another thread panics, so the sampler must get one of its own.
    assert evaluate(m, "infrastructure", healthy_host).verdict == "allow"
    with _StatusSampler(m, interval=0.2), httpx.Client(timeout=5.0) as client:
        deadline = time.monotonic() + 30
        while len(_records(m)) < 2 and time.monotonic() < deadline:
            client.get(f"http://127.0.0.1:{m.nginx.port}/")
            time.sleep(0.05)
    records = _records(m)
    assert len(records) >= 2 and all(r["event"] == "status" for r in records)
    for record in records:
        infra = record["decisions"]["infrastructure"]
        assert (infra["verdict"], infra["engine"]) == ("allow", "embedded"), infra
        assert record["interval_seconds"] is not None  # the baseline refresh is not recorded
        assert record["tracks"]["stable"]["state"] == "up"


@pytest.fixture
def healthy_host() -> dict:
    return {"disk_free_gb": 50.0, "disk_path": str(Path.cwd()), "cpu_load_1m": 0.1, "memory_used_percent": 10.0}


def test_a_change_records_the_refresh_before_it_and_no_request_is_lost(demo_api, manifest_file) -> None:
    m = load_manifest(manifest_file("canary"))
    stable, canary = demo_api("stable"), demo_api("canary")
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url, "canary": canary.url})
    seen = []
    with httpx.Client(timeout=5.0) as client:
        for refresh in dashboard.refreshes(collector, 0.05, every=3600, count=8):
            seen.append(refresh)
            if len(seen) in (3, 4, 5):
                for _ in range(10):  # to stable: the canary's verdict (too few requests) stays the same
                    client.get(f"{stable.url}/")  # traffic folded into the records that follow
            if len(seen) == 5:
                client.post(f"{canary.url}/chaos", json={"mode": "slow", "duration": 0.01})
    records = _records(m)
    # refresh 1 (baseline), 2 (first rates), 5 (the last one before the chaos, written with refresh 6), 6 (chaos
    # seen), and 8 (the last refresh, recorded when the loop ended); 3, 4 and 7 are folded into the next record
    assert [r.recorded for r in seen] == [1, 1, 0, 0, 0, 2, 0, 0]
    assert [r["refreshes"] for r in records] == [1, 1, 3, 1, 2]
    assert [r["ts"] for r in records] == [seen[i].snapshot.ts for i in (0, 1, 4, 5, 7)]  # each at its own time
    assert [r["tracks"]["canary"]["chaos"]["mode"] for r in records[2:4]] == ["none", "slow"]
    assert sum((r["tracks"]["stable"]["interval"] or {}).get("requests", 0) for r in records) == 30
