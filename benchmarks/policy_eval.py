"""Cost of a policy decision, in one run.

1. Embedded engine (regorus), engine reused as `evaluate` reuses it: decisions per second for each domain, on a
   deny input (every rule fires) and an allow input; best of several batches (other load on the machine only
   ever slows a batch down). Also the one-time cost of compiling the policies.
2. The real OPA server against the embedded engine, in the same run on the same inputs: a `opa run --server`
   started exactly as the local runtime's deploy starts it (runtime/opa_service.py: the generated bundle, its
   authorization policy), asked through swiftdeploy's own client (`OpaEngine`, one keep-alive connection, each
   request bounded as a whole by a worker thread, provenance checked). Per-decision latency distribution (p50, p90,
   p99) of both engines, sampled in interleaved rounds, and the ratio of the medians. Skipped (saying so) without
   an OPA binary (`make opa`).
3. End to end: wall time of `swiftdeploy policy eval canary --input F` versus `swiftdeploy --help` (the bare CLI
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


CASES = (
    ("infrastructure", "allow", HOST_ALLOW),
    ("infrastructure", "deny", HOST_DENY),
    ("canary", "allow", CANARY_ALLOW),
    ("canary", "deny", CANARY_DENY),
)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def opa_versus_embedded(seconds: float) -> None:
    from swiftdeploy import generate
    from swiftdeploy.manifest import load_manifest
    from swiftdeploy.policy.bundle import expected_revision, load_policy_set
    from swiftdeploy.policy.embedded import EmbeddedEngine
    from swiftdeploy.policy.opa import OpaEngine, opa_url
    from swiftdeploy.policy.server import find_binary
    from swiftdeploy.runtime.local import LocalRuntime
    from swiftdeploy.runtime.procs import free_port

    binary = find_binary(None)
    if binary is None:
        print("real OPA server: skipped, no OPA binary (`make opa` installs the pinned one; it needs Go)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.yaml"
        path.write_text(
            "services: {image: demo:1, port: 3000}\nruntime: local\npolicy: {engine: opa}\n"
            f"opa: {{port: {free_port()}, binary: {binary}, timeout: 5}}\n"
        )
        m = load_manifest(path)
        generate.write(m)
        runtime = LocalRuntime()
        runtime.start_policy_engine(m, timeout=30)
        embedded = EmbeddedEngine(load_policy_set(m))
        opa = OpaEngine(opa_url(m.opa.port), timeout=m.opa.timeout, expect_revision=expected_revision(m))
        try:
            print(f"real OPA server: {binary} on {opa.url} (bundle + authorization policy, as deployed)")
            for domain, verdict, data in CASES:
                engines = {"embedded": embedded, "opa": opa}
                assert {name: e.evaluate(domain, data).verdict for name, e in engines.items()} == {
                    "embedded": verdict,
                    "opa": verdict,
                }
                samples: dict[str, list[float]] = {name: [] for name in engines}
                for _ in range(5):  # interleaved rounds: machine load hits both engines alike
                    for name, engine in engines.items():
                        t0 = time.perf_counter()
                        while time.perf_counter() - t0 < seconds / 10:
                            s = time.perf_counter()
                            engine.evaluate(domain, data)
                            samples[name].append(time.perf_counter() - s)
                line = []
                for name, values in samples.items():
                    p50, p90, p99 = (_percentile(values, q) * 1e3 for q in (0.5, 0.9, 0.99))
                    line.append(f"{name} p50 {p50:.3f} / p90 {p90:.3f} / p99 {p99:.3f} ms (n={len(values)})")
                ratio = statistics.median(samples["opa"]) / statistics.median(samples["embedded"])
                print(f"{domain:14s} {verdict:5s}: " + "; ".join(line) + f"; opa/embedded median {ratio:.1f}x")
        finally:
            opa.close()
            runtime.down(m)


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
    opa_versus_embedded(args.seconds)
    end_to_end(args.runs)


if __name__ == "__main__":
    main()
