"""Throughput cost of the demo API's metrics instrumentation.

Starts two `python -m demo_api` processes on free 127.0.0.1 ports, one with METRICS_ENABLED=1 and one with
METRICS_ENABLED=0, warms both up, then runs `wrk -t2 -c16 -d5s` against GET / of each, alternating twice
(instrumented, plain, instrumented, plain) so drift on the machine hits both alike. Prints requests/s of each
run and the ratio instrumented / plain (target >= 0.85). Both processes are stopped at the end.

On a busy machine wrk figures swing by tens of percent between runs, so the script also prints two figures that
other load barely moves: requests served per CPU second of each server process during its wrk runs, and the CPU
time per request of the two ASGI apps in-process (no sockets; best of several interleaved batches).

    .venv/bin/python benchmarks/api_overhead.py [--duration 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _demo_api
from _demo_api import stop

TARGET_RATIO = 0.85


def start_api(metrics_enabled: bool, log_dir: Path) -> tuple[subprocess.Popen, str]:
    flag = "1" if metrics_enabled else "0"
    return _demo_api.start_api(log_dir, f"metrics-{flag}", METRICS_ENABLED=flag)


def cpu_seconds(proc: subprocess.Popen) -> float:
    import psutil

    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def wrk(url: str, duration: int) -> tuple[float, int]:
    """(requests/s, total requests) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{duration}s", f"{url}/"],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors, the figure would be meaningless:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rate or not total:
        raise SystemExit(f"could not read the request figures from wrk output:\n{out}")
    return float(rate.group(1)), int(total.group(1))


async def _asgi_us_per_request(app, requests: int) -> float:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"", "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 3000),
    }  # fmt: skip

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"in-process GET / answered {message['status']}")

    # CPU time of this process, not wall time: other load on the machine then barely moves the figure.
    started = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / requests * 1e6


def in_process(batches: int = 7, requests: int = 2000) -> tuple[float, float]:
    """Best-of-batches microseconds per GET / for the instrumented and the plain app, interleaved."""
    from demo_api.app import create_app
    from demo_api.config import Settings

    apps = {True: create_app(Settings(), instrument=True), False: create_app(Settings(), instrument=False)}
    best = {True: float("inf"), False: float("inf")}

    async def run() -> None:
        for app in apps.values():
            await _asgi_us_per_request(app, 200)  # warm-up
        for _ in range(batches):
            for enabled, app in apps.items():
                best[enabled] = min(best[enabled], await _asgi_us_per_request(app, requests))

    asyncio.run(run())
    return best[True], best[False]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="api-overhead-") as tmp:
        procs: list[subprocess.Popen] = []
        try:
            instrumented = start_api(True, Path(tmp))
            procs.append(instrumented[0])
            plain = start_api(False, Path(tmp))
            procs.append(plain[0])
            for _, url in (instrumented, plain):
                wrk(url, 1)  # warm-up: imports, first-request paths, label children
            totals = {"instrumented": 0.0, "plain": 0.0}
            served = {"instrumented": 0, "plain": 0}
            cpu = {"instrumented": 0.0, "plain": 0.0}
            for round_no in range(1, args.rounds + 1):
                for name, (proc, url) in (("instrumented", instrumented), ("plain", plain)):
                    cpu_before = cpu_seconds(proc)
                    rps, requests = wrk(url, args.duration)
                    cpu_used = cpu_seconds(proc) - cpu_before
                    totals[name] += rps
                    served[name] += requests
                    cpu[name] += cpu_used
                    print(
                        f"round {round_no}  {name:<12} {rps:10.1f} req/s  "
                        f"({requests / cpu_used:8.1f} requests per server CPU second)"
                    )
        finally:
            for proc in procs:
                stop(proc)

    ratio = totals["instrumented"] / totals["plain"]
    print(f"mean instrumented {totals['instrumented'] / args.rounds:10.1f} req/s")
    print(f"mean plain        {totals['plain'] / args.rounds:10.1f} req/s")
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(f"wrk ratio instrumented/plain = {ratio:.3f} ({verdict} target {TARGET_RATIO})")
    per_cpu = {name: served[name] / cpu[name] for name in served}
    print(
        f"server efficiency: instrumented {per_cpu['instrumented']:.1f}, plain {per_cpu['plain']:.1f} "
        f"requests per CPU second, ratio = {per_cpu['instrumented'] / per_cpu['plain']:.3f}"
    )

    instr_us, plain_us = in_process()
    asgi_ratio = plain_us / instr_us  # throughput ratio: requests/s scale as 1 / time per request
    print(
        f"in-process ASGI CPU time: instrumented {instr_us:.1f} us/req, plain {plain_us:.1f} us/req, "
        f"ratio instrumented/plain = {asgi_ratio:.3f} (best of 7 interleaved batches of 2000)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
