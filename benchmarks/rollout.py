"""`swiftdeploy rollout` on the local runtime: how fast a bad canary is rolled back, and what a healthy rollout costs.

Each run deploys a fresh local stack (the demo API under uvicorn, the real nginx, the embedded engine) in a temporary
folder, with the policy's default canary thresholds and `canary.steps: [10, 25, 50]`, sends open-loop GET / traffic
to the public listener through `swiftdeploy.ops.traffic`, and tears the stack down afterwards.

1. Time to roll back: the rollout starts; the moment step 1 begins (its `rollout_step` record), 5 % errors are
   injected into the canary (`chaos error --rate 0.05`); the figure is the time from that injection to `rollout`
   returning with the canary rolled back (all traffic on stable, canary removed, manifest in stable mode), at 20 and
   at 100 req/s total (goal: under 40 s at 20 req/s).
2. A healthy three-step rollout at 100 req/s: wall time from `rollout` starting to stable running the new version,
   and lost requests during it (no answer, or an answer other than 200; goal 0).

    .venv/bin/python benchmarks/rollout.py [--runs 3] [--healthy-runs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MANIFEST = """\
services: {{name: app, image: demo:1, version: 1.0.0, port: {app_port}}}
canary:
  image: demo:2
  version: 2.0.0
  weight: 10
  steps: [10, 25, 50]
  analysis: {{max_step_seconds: 120}}
nginx: {{port: {public_port}, admin_port: {admin_port}}}
runtime: local
policy:
  engine: embedded
  # only the host rules relaxed (a busy benchmark machine); the canary thresholds are the policy defaults
  thresholds: {{max_cpu_load: 1000, min_disk_free_gb: 0, max_memory_used_percent: 100}}
"""


def write_manifest(folder: Path) -> Path:
    from swiftdeploy.runtime.procs import free_port_block

    app = free_port_block(4)
    public = free_port_block(1)
    admin = free_port_block(1)
    path = folder / "manifest.yaml"
    path.write_text(MANIFEST.format(app_port=app, public_port=public, admin_port=admin), encoding="utf-8")
    return path


@contextlib.contextmanager
def stack(rps: float) -> Any:
    """A deployed stack under `rps` req/s of traffic: yields (manifest path, the traffic summary once over)."""
    from swiftdeploy.manifest import load_manifest
    from swiftdeploy.ops import deploy, teardown, traffic

    with tempfile.TemporaryDirectory(prefix="swiftdeploy-rollout-bench-") as tmp:
        path = write_manifest(Path(tmp))
        deploy(path, timeout=60)
        stop = threading.Event()
        summary: dict[str, Any] = {}
        m = load_manifest(path)
        sender = threading.Thread(target=lambda: summary.update(traffic(m, rps, 300, stop=stop).to_dict()))
        sender.start()
        try:
            time.sleep(2)  # both tracks' counters exist before the first look
            yield path, summary
        finally:
            stop.set()
            sender.join(timeout=60)
            teardown(path)


def time_to_rollback(rps: float) -> tuple[float, str]:
    """Seconds from injecting 5 % errors at step 1 to the rolled-back rollout returning; and the verdict."""
    from swiftdeploy.errors import PolicyBlocked
    from swiftdeploy.manifest import load_manifest
    from swiftdeploy.ops import chaos, rollout

    with stack(rps) as (path, _summary):
        injected: list[float] = []

        def on_update(record: dict[str, Any]) -> None:
            if record["event"] == "rollout_step" and not injected:
                chaos(load_manifest(path), "canary", "error", rate=0.05)
                injected.append(time.monotonic())

        try:
            rollout(path, on_update=on_update)
        except PolicyBlocked as exc:
            done = time.monotonic()
            m = load_manifest(path)
            assert m.services.mode == "stable", "not rolled back"
            return done - injected[0], exc.decision.verdict
        raise AssertionError("the 5 % error canary was promoted")


def healthy_rollout(rps: float) -> tuple[float, dict[str, Any]]:
    from swiftdeploy.manifest import load_manifest
    from swiftdeploy.ops import rollout

    with stack(rps) as (path, summary):
        started = time.monotonic()
        rollout(path)
        seconds = time.monotonic() - started
        assert load_manifest(path).services.version == "2.0.0"
        time.sleep(1)
    return seconds, summary


def lost(summary: dict[str, Any]) -> int:
    return sum(summary["errors"].values()) + sum(n for status, n in summary["by_status"].items() if status != "200")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rollback runs per traffic rate")
    parser.add_argument("--healthy-runs", type=int, default=2, help="healthy three-step rollouts")
    args = parser.parse_args()

    print("time from injecting 5 % errors into the canary (at step 1, 10 %) to the rollback being complete")
    for rps in (20, 100):
        runs = [time_to_rollback(rps) for _ in range(args.runs)]
        seconds = [s for s, _verdict in runs]
        shown = ", ".join(f"{s:.1f} s ({verdict})" for s, verdict in runs)
        goal = " (goal < 40 s)" if rps == 20 else ""
        print(
            f"  {rps:>3} req/s total: median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s{goal}: "
            f"{shown}"
        )
        sys.stdout.flush()

    print("healthy three-step rollout (10 % -> 25 % -> 50 % -> promoted) at 100 req/s total")
    for _ in range(args.healthy_runs):
        seconds, summary = healthy_rollout(100)
        print(
            f"  wall time {seconds:.1f} s; {summary['sent']} requests sent during the run, {lost(summary)} lost "
            f"(no answer or not 200; goal 0); by track {summary['by_mode']}"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
