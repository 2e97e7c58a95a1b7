"""How `audit` scales with the length of history.jsonl: time should grow linearly, memory should stay flat.

Generates histories of 10 k, 100 k and 1 M lines in a temporary folder (a realistic mix: ~90 % status records
shaped like `status` writes them, lifecycle events, policy decisions with violations, chaos injections and
recoveries, plus a few torn/garbage lines), then audits each one in a fresh subprocess and prints, per size:
wall time, time per line, peak RSS of the process (ru_maxrss), and its growth over the baseline of a process that
only imported swiftdeploy.audit. CPU time is printed beside wall time: on a shared machine it is the figure
that load does not inflate. With --tracemalloc N, a second subprocess per size up to N lines also reports the
peak of Python allocations during the audit (slower: tracemalloc hooks every allocation).

    .venv/bin/python benchmarks/audit_scale.py [--sizes 10000,100000,1000000] [--tracemalloc 100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
from swiftdeploy import audit
if mode == "tracemalloc":
    import tracemalloc
    tracemalloc.start()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu0 = time.process_time()
started = time.perf_counter()
report = audit.build(path) if path != "-" else None
text = audit.render_markdown(report) if report else ""
seconds = time.perf_counter() - started
cpu = time.process_time() - cpu0
result = {"seconds": seconds, "cpu_seconds": cpu, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          "base_kb": base, "records": report.records if report else 0, "skipped": report.skipped if report else 0,
          "report_bytes": len(text.encode())}
if mode == "tracemalloc":
    result["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
json.dump(result, open(out, "w"))
"""


def generate(path: Path, lines: int) -> None:
    """Write `lines` history lines, one status record every 2 s of simulated time."""
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    status_tpl = (
        '{{"ts": "{ts}", "event": "status", "project": "swiftdeploy-app", "mode": "canary", "baseline": false, '
        '"interval_seconds": 2.0, "window_seconds": 30.0, "engines": ["embedded"], "tracks": {{'
        '"stable": {{"state": "up", "up": true, "error": null, "health": "ok", "mode": "stable", "version": "1.0.0", '
        '"uptime_seconds": {up}, "chaos": {{"mode": "none"}}, "interval": {{"seconds": 2.0, "requests": 40, '
        '"errors": 0, "rps": 20.0, "error_rate_percent": 0.0, "p50_ms": 4.1, "p99_ms": {p99s}}}}}, '
        '"canary": {{"state": "up", "up": true, "error": null, "health": "ok", "mode": "canary", "version": "1.1.0", '
        '"uptime_seconds": {up}, "chaos": {{"mode": "{chaos}"}}, "interval": {{"seconds": 2.0, "requests": 4, '
        '"errors": {err}, "rps": 2.0, "error_rate_percent": {rate}, "p50_ms": 5.0, "p99_ms": {p99c}}}}}}}, '
        '"decisions": {{"infrastructure": {{"verdict": "allow", "allow": true, "engine": "embedded", '
        '"violations": [], "message": null}}, "canary": {{"verdict": "{verdict}", "allow": {allow}, '
        '"engine": "embedded", "violations": {violations}, "message": null}}}}}}'
    )
    violation = (
        '[{{"rule": "error_rate", "message": "canary error rate {rate} % is above the maximum of 1 %", '
        '"observed": {rate}, "threshold": 1, "unit": "%"}}]'
    )
    cycle = [
        ("deploy_started", {"image": "swift-deploy-1-node:latest", "version": "1.0.0"}),
        ("deploy_succeeded", {"image": "swift-deploy-1-node:latest", "version": "1.0.0", "mode_to": "stable"}),
        ("promote_succeeded", {"target": "canary", "version": "1.1.0", "mode_from": "stable", "mode_to": "canary"}),
        ("chaos", {"track": "canary", "mode": "error", "rate": 0.5}),
        ("policy_decision", {"domain": "canary", "engine": "embedded", "verdict": "deny", "allow": False,
                             "violations": [{"rule": "error_rate", "message": "m", "observed": 50.0,
                                             "threshold": 1, "unit": "%"}], "input": {"window_seconds": 30}}),
        ("promote_blocked", {"target": "stable", "verdict": "deny"}),
        ("chaos", {"track": "canary", "mode": "recover"}),
        ("rollback", {"mode_from": "canary", "mode_to": "stable"}),
    ]  # fmt: skip
    with open(path, "w", encoding="utf-8") as f:
        chaos_on = False
        for i in range(lines):
            moment = t0 + timedelta(seconds=2 * i)
            ts = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if i % 20_000 == 19_999:
                f.write('{"ts": "2024-05-01T00:00:00.000Z", "event": "tor\n')  # a torn line mid-file
            elif i % 10 == 5:
                event, fields = cycle[(i // 10) % len(cycle)]
                chaos_on = (event == "chaos" and fields.get("mode") == "error") or (chaos_on and event != "chaos")
                f.write(json.dumps({"ts": ts, "event": event, **fields}) + "\n")
            else:
                rate = 50.0 if chaos_on else 0.0
                deny = rate > 1
                f.write(
                    status_tpl.format(
                        ts=ts,
                        up=float(i),
                        p99s=4.0 + (i % 7),
                        p99c=5.0 + (i % 11),
                        chaos="error" if chaos_on else "none",
                        err=2 if chaos_on else 0,
                        rate=rate,
                        verdict="deny" if deny else "allow",
                        allow="false" if deny else "true",
                        violations=violation.format(rate=rate) if deny else "[]",
                    )
                    + "\n"
                )


def measure(mode: str, path: str, workdir: Path) -> dict:
    out = workdir / f"result-{mode}.json"
    subprocess.run([sys.executable, "-c", CHILD, mode, path, str(out)], check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated line counts")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="MAX_LINES",
        help="also measure peak Python allocations for sizes up to MAX_LINES (tracemalloc is slow)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="audit-scale-") as tmp:
        workdir = Path(tmp)
        baseline = measure("plain", "-", workdir)
        print(f"baseline process (python + swiftdeploy.audit imported): peak RSS {baseline['maxrss_kb'] / 1024:.1f} MB")
        header = (
            f"{'lines':>9} {'file MB':>8} {'wall s':>7} {'CPU s':>7} {'CPU µs/line':>12} {'peak RSS MB':>12} "
            f"{'RSS growth MB':>14} {'py peak MB':>11}"
        )
        print(header + f" {'skipped':>8}")
        rows = []
        for size in sizes:
            path = workdir / f"history-{size}.jsonl"
            started = time.perf_counter()
            generate(path, size)
            gen = time.perf_counter() - started
            r = measure("plain", str(path), workdir)
            line = (
                f"{size:>9} {path.stat().st_size / 1e6:>8.1f} {r['seconds']:>7.2f} {r['cpu_seconds']:>7.2f} "
                f"{r['cpu_seconds'] / size * 1e6:>12.2f} {r['maxrss_kb'] / 1024:>12.1f} "
                f"{(r['maxrss_kb'] - baseline['maxrss_kb']) / 1024:>14.1f}"
            )
            if size <= args.tracemalloc:
                t = measure("tracemalloc", str(path), workdir)
                line += f" {t['traced_peak_bytes'] / 1e6:>11.2f}"
            else:
                line += f" {'-':>11}"
            print(line + f" {r['skipped']:>8}   (generated in {gen:.1f} s)", flush=True)
            rows.append((size, r))
            path.unlink()
        if len(rows) > 1:
            (small, rs), (big, rb) = rows[0], rows[-1]
            print(
                f"\n{big // small}x the lines: {rb['cpu_seconds'] / rs['cpu_seconds']:.1f}x the CPU time "
                f"(linear = {big // small}x), {rb['seconds'] / rs['seconds']:.1f}x the wall time, "
                f"peak RSS {rb['maxrss_kb'] / rs['maxrss_kb']:.2f}x"
            )


if __name__ == "__main__":
    main()
