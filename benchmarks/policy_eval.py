"""Cost of a policy decision, in one run.

1. Embedded engine (regorus), engine reused as `evaluate` reuses it: decisions per second for each domain, on a
   deny input (every rule fires) and an allow input; best of several batches (other load on the machine only
   ever slows a batch down). Also the one-time cost of compiling the policies.
2. End to end: wall time of `swiftdeploy policy eval canary --input F` versus `swiftdeploy --help` (the bare CLI
   start), each run as a fresh process, interleaved, median of N. The ratio says what loading the manifest-free
   defaults, regorus and one decision add to the CLI's start.

    .venv/bin/python benchmarks/policy_eval.py [--seconds 1.0] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST_DENY = {"disk_free_gb": 1, "cpu_load_1m": 9, "memory_used_percent": 99, "disk_path": "/"}
HOST_ALLOW = {"disk_free_gb": 50, "cpu_load_1m": 0.5, "memory_used_percent": 40, "disk_path": "/"}
TRACK = {"requests": 200, "errors": 0, "error_rate_percent": 0.0, "p50_ms": 20.0, "p99_ms": 100.0}
CANARY_DENY = {
    "window_seconds": 30,
    "canary": {"requests": 200, "errors": 9, "error_rate_percent": 4.5, "p50_ms": 300.0, "p99_ms": 900.0},
    "stable": TRACK,
}
CANARY_ALLOW = {"window_seconds": 30, "canary": TRACK, "stable": TRACK}


def decisions_per_second(seconds: float) -> None:
    from swiftdeploy.policy.bundle import load_policy_set
    from swiftdeploy.policy.embedded import EmbeddedEngine

    started = time.perf_counter()
    engine = EmbeddedEngine(load_policy_set(None))
    print(f"compile default policies: {(time.perf_counter() - started) * 1000:.1f} ms (once per process)")
    for domain, label, data in (
        ("infrastructure", "allow", HOST_ALLOW),
        ("infrastructure", "deny ", HOST_DENY),
        ("canary", "allow", CANARY_ALLOW),
        ("canary", "deny ", CANARY_DENY),
    ):
        expected = label.strip()
        assert engine.evaluate(domain, data).verdict == expected
        best = 0.0
        for _ in range(5):
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds / 5:
                engine.evaluate(domain, data)
                n += 1
            best = max(best, n / elapsed)
        print(f"embedded {domain:14s} {label}: {best:8.0f} decisions/s ({1e3 / best:.3f} ms each)")


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return elapsed


def end_to_end(runs: int) -> None:
    exe = str(Path(sys.executable).with_name("swiftdeploy"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.json"
        path.write_text(json.dumps(CANARY_DENY))
        commands = {
            "help": [exe, "--help"],
            "eval": [exe, "policy", "eval", "canary", "--input", str(path)],
        }
        for argv in commands.values():  # warm the page cache and .pyc files
            wall(argv)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                times[name].append(wall(argv))
    help_s, eval_s = statistics.median(times["help"]), statistics.median(times["eval"])
    print(f"swiftdeploy --help                          : median {help_s * 1000:7.1f} ms over {runs} runs")
    print(f"swiftdeploy policy eval canary --input F    : median {eval_s * 1000:7.1f} ms over {runs} runs")
    print(f"ratio policy eval / --help                  : {eval_s / help_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per domain/verdict")
    parser.add_argument("--runs", type=int, default=7, help="process runs per command")
    args = parser.parse_args()
    decisions_per_second(args.seconds)
    end_to_end(args.runs)


if __name__ == "__main__":
    main()
