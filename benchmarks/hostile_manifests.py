"""The hostile-manifest corpus (tests/faults/hostile_manifests.py) timed and measured through the real CLI.

    .venv/bin/python benchmarks/hostile_manifests.py [--budget 60] [--only alias]

Runs every case once, each as `swiftdeploy -m X <command>` under RLIMIT_AS 1 GiB, interleaved with a run of a
valid manifest's `init --dry-run` (the baseline: what any command costs to start, parse and render), and prints the
corpus count, the time distribution, the slowest case with its time and peak memory (ru_maxrss of the child from
wait4), the peak memory of all cases, the slowest/baseline ratio, and the library's own time to refuse the alias
bomb in-process. A case that does not answer as the corpus
says is listed as a mismatch (the test, tests/faults/test_faults_manifest.py, is the one that asserts).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from hostile_manifests import BASE, CASES, Case, alias_bomb, prepare, run_case  # noqa: E402

BASELINE = Case("baseline-valid-init-dry-run", lambda p, _o: _valid(p), "", ("init", "--dry-run"), exit_code=0)


def _valid(project: Path) -> Path:
    path = project / "manifest.yaml"
    path.write_text(BASE, encoding="utf-8")
    return path


def _bomb_ms() -> float:
    """The library's own time to refuse the 9-level alias bomb (no interpreter start): parse_manifest, in ms."""
    import time

    from swiftdeploy.errors import ManifestError
    from swiftdeploy.manifest.loader import parse_manifest

    text, times = alias_bomb(9), []
    for _ in range(20):
        started = time.perf_counter()
        with contextlib.suppress(ManifestError):
            parse_manifest(text)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds before a run is killed (default 60)")
    parser.add_argument("--only", default="", help="run only the cases whose id holds this text")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only in c.id]
    rows, baseline = [], []
    mismatches = []
    for case in cases:
        for current in (case, BASELINE):
            with tempfile.TemporaryDirectory() as tmp:
                _project, _outside, target = prepare(current, Path(tmp))
                outcome = run_case(current, target, budget=args.budget)
            if current is BASELINE:
                baseline.append(outcome.seconds)
                continue
            rows.append((case.id, outcome.seconds, outcome.maxrss_kib))
            if outcome.timed_out or outcome.returncode != case.exit_code or case.says not in outcome.stderr:
                mismatches.append(f"{case.id}: exit {outcome.returncode}, {outcome.stderr.strip()[:160]!r}")
    times = sorted(seconds for _id, seconds, _rss in rows)
    slowest = max(rows, key=lambda r: r[1])
    hungriest = max(rows, key=lambda r: r[2])
    base = statistics.median(baseline)
    print(f"hostile manifests: {len(rows)} cases (RLIMIT_AS 1 GiB each)")
    print(
        f"time per case: median {statistics.median(times):.2f} s, p90 {times[int(0.9 * (len(times) - 1))]:.2f} s, "
        f"slowest {slowest[1]:.2f} s ({slowest[0]}, peak {slowest[2] / 1024:.0f} MiB)"
    )
    print(f"peak memory of any case: {hungriest[2] / 1024:.0f} MiB ({hungriest[0]})")
    print(f"baseline (valid manifest, init --dry-run): median {base:.2f} s over {len(baseline)} runs")
    print(f"slowest case / baseline: {slowest[1] / base:.2f}x")
    print(f"alias bomb (9 levels, {len(alias_bomb(9))} bytes) refused in-process: {_bomb_ms():.1f} ms (median of 20)")
    for line in mismatches:
        print(f"MISMATCH {line}")


if __name__ == "__main__":
    main()
