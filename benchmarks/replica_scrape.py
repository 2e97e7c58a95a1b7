"""What reading a track costs when it has replicas (the swarm runtime): one scrape of a single URL against
`metrics.scrape_replicas` over 1, 3 and 8 real demo API processes (scraped at most 8 at a time), and the window
math over their parts. Also one scrape over TCP against one over a unix socket (`http+unix://`, the swarm admin
listener's form) of the same demo API served by `uvicorn --uds`.

Prints the median and P90 of each in ms and the ratio to one single-URL scrape. Every process is stopped at the end.

    .venv/bin/python benchmarks/replica_scrape.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _demo_api
from _demo_api import stop

from swiftdeploy.localhttp import unix_url
from swiftdeploy.metrics import scrape, scrape_replicas, window


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def summary(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def start_uds(folder: Path) -> tuple[subprocess.Popen, Path]:
    sock = folder / "api.sock"
    log = (folder / "uvicorn-uds.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "demo_api.app:create_app", "--factory", "--uds", str(sock)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not sock.exists():
        if proc.poll() is not None:
            raise SystemExit("uvicorn --uds exited; see uvicorn-uds.log")
        time.sleep(0.05)
    return proc, sock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="sd-bench-", dir="/tmp") as tmp:
        folder = Path(tmp)
        try:
            urls = []
            for i in range(8):
                proc, url = _demo_api.start_api(folder, f"replica-{i}", MODE="canary")
                procs.append(proc)
                urls.append(f"{url}/metrics")
                for _ in range(20):  # some traffic, so each /metrics carries its series
                    urllib.request.urlopen(url, timeout=5).close()
            uds_proc, sock = start_uds(folder)
            procs.append(uds_proc)

            single = timed(lambda: scrape(urls[0]), args.rounds)
            base, _ = summary(single)
            print(f"rounds: {args.rounds}; CPUs: {os.cpu_count()}")
            print(f"{'what':<34} {'median ms':>10} {'p90 ms':>8} {'x single':>9}")
            print(f"{'one URL (docker/local)':<34} {base:>10.2f} {summary(single)[1]:>8.2f} {1.0:>9.2f}")
            for n in (1, 3, 8):
                tasks = {f"task{i}": urls[i] for i in range(n)}
                med, p90 = summary(timed(lambda tasks=tasks: scrape_replicas(tasks), args.rounds))
                print(f"{f'{n} replicas, summed':<34} {med:>10.2f} {p90:>8.2f} {med / base:>9.2f}")
            tasks = {f"task{i}": urls[i] for i in range(8)}
            before, after = scrape_replicas(tasks), scrape_replicas(tasks)
            med, p90 = summary(timed(lambda: window(before, after), args.rounds))
            print(f"{'window over 8 parts (no I/O)':<34} {med:>10.3f} {p90:>8.3f} {med / base:>9.3f}")
            uds = timed(lambda: scrape(unix_url(sock, "/metrics")), args.rounds)
            tcp_ms = summary(timed(lambda: scrape(urls[0]), args.rounds))[0]
            med, p90 = summary(uds)
            print(f"{'one URL over http+unix':<34} {med:>10.2f} {p90:>8.2f} {med / tcp_ms:>9.2f}")
        finally:
            for proc in procs:
                stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
