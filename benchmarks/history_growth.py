"""Bytes a `swiftdeploy status` dashboard refreshing every 2 s appends to history.jsonl per hour: before (every
refresh recorded, what `status` did until `history.status_every`) and after (a record when something changed,
else every `history.status_every` seconds, 60 by default).

Starts two `python -m demo_api` processes (stable and canary) on free 127.0.0.1 ports with steady traffic to
both, and runs the real refresh loop (`dashboard.refreshes`: real scrapes, real embedded policy decisions, real
appends) against them N times per variant. Only the clock is simulated: the collector's clock advances 2 s per
refresh and the loop does not sleep, so N refreshes stand for N x 2 s of dashboard time in seconds of wall time.
A third of the way in the canary gets chaos `error` (10 %), two thirds in it recovers, so the after-variant also
records real changes. Prints bytes and records per simulated hour of each variant and the ratio before / after
(measured, not asserted), and how long one 50 MiB history file lasts at each rate.

    .venv/bin/python benchmarks/history_growth.py [--refreshes 600] [--interval 2] [--rps 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import _demo_api
from _demo_api import free_port, stop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable from a checkout without installing


def start_api(mode: str, log_dir: Path) -> tuple[subprocess.Popen, str]:
    return _demo_api.start_api(log_dir, mode, MODE=mode)


def chaos(url: str, body: dict) -> None:
    request = urllib.request.Request(
        f"{url}/chaos", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def traffic(urls: list[str], rps: float, stop_event: threading.Event) -> None:
    import httpx

    with httpx.Client(timeout=5.0) as client:
        while not stop_event.is_set():
            for url in urls:
                client.get(f"{url}/")
            stop_event.wait(len(urls) / rps)


def run_variant(folder: Path, urls: dict[str, str], refreshes: int, interval: float, every: float | None) -> dict:
    from swiftdeploy import dashboard
    from swiftdeploy.manifest import load_manifest

    m = load_manifest(folder / "manifest.yaml")
    if m.history_path.exists():
        m.history_path.unlink()
    ticks = iter(range(10**9))
    collector = dashboard.StatusCollector(m, urls=urls, clock=lambda: next(ticks) * interval)
    started = time.monotonic()
    for i, _refresh in enumerate(dashboard.refreshes(collector, interval, every=every, sleep=lambda _s: None)):
        if i == refreshes // 3:
            chaos(urls["canary"], {"mode": "error", "rate": 0.1})
        elif i == 2 * refreshes // 3:
            chaos(urls["canary"], {"mode": "recover"})
        if i + 1 >= refreshes:
            break  # the loop's end records the last refresh, as Ctrl-C does
    wall = time.monotonic() - started
    size = m.history_path.stat().st_size
    records = sum(1 for _ in m.history_path.open("rb"))
    hours = refreshes * interval / 3600
    return {"bytes": size, "records": records, "bytes_per_hour": size / hours, "records_per_hour": records / hours,
            "wall": wall}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refreshes", type=int, default=600, help="refreshes per variant (default 600 = 20 min)")
    parser.add_argument("--interval", type=float, default=2.0, help="the dashboard's --interval (default 2 s)")
    parser.add_argument("--rps", type=float, default=40.0, help="steady traffic to the two tracks together")
    args = parser.parse_args()

    from swiftdeploy.history import MB

    with tempfile.TemporaryDirectory(prefix="swiftdeploy-history-growth-") as tmp:
        folder = Path(tmp)
        (folder / "manifest.yaml").write_text(
            "services: {image: swift-deploy-1-node:latest, port: 3000, mode: canary}\n"
            f"nginx: {{port: {free_port()}, admin_port: {free_port()}}}\n"
            "runtime: local\n"
            "policy:\n"
            "  engine: embedded\n"
            "  thresholds: {max_cpu_load: 1000, min_disk_free_gb: 0, max_memory_used_percent: 100}\n",
            encoding="utf-8",
        )
        procs = []
        stop_event = threading.Event()
        try:
            stable, stable_url = start_api("stable", folder)
            procs.append(stable)
            canary, canary_url = start_api("canary", folder)
            procs.append(canary)
            urls = {"stable": stable_url, "canary": canary_url}
            sender = threading.Thread(target=traffic, args=([stable_url, canary_url], args.rps, stop_event))
            sender.start()
            before = run_variant(folder, urls, args.refreshes, args.interval, every=0.0)
            after = run_variant(folder, urls, args.refreshes, args.interval, every=None)
        finally:
            stop_event.set()
            for proc in procs:
                stop(proc)

    simulated = args.refreshes * args.interval / 60
    print(f"{args.refreshes} refreshes of a {args.interval:g}-s dashboard per variant ({simulated:g} simulated "
          f"minutes), canary chaos error 10 % for the middle third, ~{args.rps:g} req/s")  # fmt: skip
    print(f"{'variant':<44} {'records/h':>10} {'bytes/h':>12} {'bytes/record':>13} {'50 MiB lasts':>13} {'wall':>7}")
    for name, v in (("before: every refresh recorded", before), ("after: on change, else every 60 s", after)):
        days = 50 * MB / v["bytes_per_hour"] / 24
        print(
            f"{name:<44} {v['records_per_hour']:>10.0f} {v['bytes_per_hour']:>12,.0f} "
            f"{v['bytes'] / v['records']:>13,.0f} {days:>11.1f} d {v['wall']:>6.1f}s"
        )
    print(f"ratio before / after (bytes per hour): {before['bytes_per_hour'] / after['bytes_per_hour']:.1f}x")


if __name__ == "__main__":
    main()
