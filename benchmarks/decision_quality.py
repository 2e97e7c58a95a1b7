"""How often the canary gate is right: simulated canaries judged by the real gate code.

Each simulated window draws Poisson arrivals per track (canary weight 10: a tenth of the total rate), binomial 5xx
errors, and lognormal latencies counted into the demo API's histogram buckets (src/demo_api/metrics.py), renders
both tracks as Prometheus text and judges them:

- fixed: one 30 s window through `swiftdeploy.judge_canary` (text -> window -> evidence -> embedded Rego policy);
- sequential: the `promote stable` watch (`swiftdeploy.judge.watch`): a look every second for at most
  --max-watch seconds (the default policy.window_seconds, 120 s), each look's cumulative window through the same
  window and evidence code (confidence sequences), stopping at the first allow or deny; the time of that look is
  the time to a verdict.

  A decision of the embedded engine costs a few milliseconds, and 2 000 runs per cell are millions of looks. So
  the sequential mode screens each look with SCREEN, a transcription of the default policy's comparisons (what is
  compared with what; it decides nothing in swiftdeploy), and asks the real policy at every look the screen calls
  allow or deny (so every stop is the policy's own verdict), at the last look, and at an --audit share of the
  others. Any disagreement between the two is counted, printed and fails the run (exit 1): the times measured are
  the policy's.

It prints, per case and total request rate, the deny / inconclusive / allow shares of both modes and the median
and 90th percentile time to a verdict (">" when fewer runs than that reached one), then checks the goals of
docs/policies.md. Seeded: the same --seed gives the same table whatever --workers is.

    .venv/bin/python benchmarks/decision_quality.py [--windows 2000] [--runs 2000] [--seed 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from demo_api.metrics import DURATION_BUCKETS

RATES = (5, 20, 50, 200)  # total requests per second
WEIGHT = 0.10  # canary weight 10
WINDOW = 30.0  # seconds of a fixed window
SIGMA = math.log(6.0) / 2.3263  # lognormal shape: P99 = 6 x the median (20 ms -> ~120 ms)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    shift_ms: float = 0.0  # added to every request (chaos slow sleeps this long first)

    def cdf(self, ms: float) -> float:
        x = ms - self.shift_ms
        if x <= 0:
            return 0.0
        return 0.5 * math.erfc(-math.log(x / self.median_ms) / (SIGMA * math.sqrt(2.0)))

    @property
    def p99_ms(self) -> float:
        return self.shift_ms + self.median_ms * math.exp(2.3263 * SIGMA)


HEALTHY = Latency(20.0)  # median 20 ms, P99 ~120 ms
BASE = Latency(200.0 / 6.0)  # the slower-canary cases' stable: P99 200 ms


@dataclass(frozen=True)
class Case:
    name: str
    canary_errors: float
    stable_errors: float
    canary: Latency
    stable: Latency
    wrong: str | None  # the verdict that is wrong for this canary (None: neither deny nor allow is wrong)


CASES = (
    Case("healthy, 0 % errors", 0.0, 0.0, HEALTHY, HEALTHY, "deny"),
    Case("healthy, 0.2 % errors", 0.002, 0.002, HEALTHY, HEALTHY, "deny"),
    Case("healthy, both tracks 0.5 % errors", 0.005, 0.005, HEALTHY, HEALTHY, "deny"),
    Case("healthy, both tracks at exactly 1 %", 0.01, 0.01, HEALTHY, HEALTHY, "deny"),
    Case("1.5x slower (P99 300 vs 200 ms), harmless", 0.002, 0.002, Latency(50.0), BASE, "deny"),
    Case("3x slower (P99 600 vs 200 ms)", 0.002, 0.002, Latency(100.0), BASE, None),
    Case("2 % errors (stable 0.2 %)", 0.02, 0.002, HEALTHY, HEALTHY, "allow"),
    Case("5 % errors (stable 0.2 %)", 0.05, 0.002, HEALTHY, HEALTHY, "allow"),
    Case("chaos slow 0.6 s", 0.0, 0.002, Latency(20.0, 600.0), HEALTHY, "allow"),
    Case("all requests failing", 1.0, 0.002, HEALTHY, HEALTHY, "allow"),
)


# --- sampling (exact; Python 3.11 has no random.binomialvariate) --------------------------------------------------


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 60:  # split: a sum of Poissons is Poisson
        half = lam / 2
        return poisson(rng, half) + poisson(rng, lam - half)
    limit, k, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    if n * p > 30:  # order-statistic split (Knuth 3.4.1): exact, O(log n) beta draws
        a = 1 + n // 2
        b = n + 1 - a
        x = rng.betavariate(a, b)
        if x >= p:
            return binomial(rng, a - 1, p / x)
        return a + binomial(rng, b - 1, (p - x) / (1.0 - x))
    u, q = rng.random(), 1.0 - p  # inversion from 0: O(n p) steps
    pk = q**n
    cdf, k, odds = pk, 0, p / q
    while u > cdf and k < n:
        pk *= (n - k) / (k + 1) * odds
        k += 1
        cdf += pk
    return k


BOUNDS_MS = tuple(b * 1000.0 for b in DURATION_BUCKETS)


def bucket_counts(rng: random.Random, n: int, latency: Latency) -> list[int]:
    """Multinomial counts of n requests per bucket ((0, b1], (b1, b2], ..., (b_last, +Inf))."""
    counts, left, mass_left, previous = [], n, 1.0, 0.0
    for bound in BOUNDS_MS:
        cdf = latency.cdf(bound)
        mass = cdf - previous
        previous = cdf
        k = binomial(rng, left, min(1.0, mass / mass_left)) if left and mass_left > 0 else 0
        counts.append(k)
        left -= k
        mass_left -= mass
    counts.append(left)
    return counts


@dataclass
class Counters:
    """One track's cumulative counters, as its /metrics would show them."""

    ok: int = 0
    errors: int = 0
    buckets: list[int] | None = None

    def add(self, rng: random.Random, n: int, error_rate: float, latency: Latency) -> None:
        bad = binomial(rng, n, error_rate)
        self.ok += n - bad
        self.errors += bad
        fresh = bucket_counts(rng, n, latency)
        self.buckets = fresh if self.buckets is None else [a + b for a, b in zip(self.buckets, fresh, strict=True)]

    def text(self) -> str:
        """Prometheus text exposition, the demo API's metric names and labels."""
        lines = [
            "# TYPE http_requests_total counter",
            f'http_requests_total{{method="GET",path="/",status_code="200"}} {self.ok}',
            f'http_requests_total{{method="GET",path="/",status_code="500"}} {self.errors}',
            "# TYPE http_request_duration_seconds histogram",
        ]
        running = 0
        for le, count in zip(DURATION_BUCKETS, self.buckets or [0] * len(DURATION_BUCKETS), strict=False):
            running += count
            lines.append(f'http_request_duration_seconds_bucket{{le="{le}",method="GET",path="/"}} {running}')
        total = self.ok + self.errors
        lines.append(f'http_request_duration_seconds_bucket{{le="+Inf",method="GET",path="/"}} {total}')
        lines.append(f'http_request_duration_seconds_count{{method="GET",path="/"}} {total}')
        lines += ["# TYPE app_uptime_seconds gauge", "app_uptime_seconds 1000"]
        return "\n".join(lines) + "\n"


def grow(rng: random.Random, tracks: dict[str, Counters], case: Case, rate: float, seconds: float) -> None:
    tracks["canary"].add(rng, poisson(rng, rate * WEIGHT * seconds), case.canary_errors, case.canary)
    tracks["stable"].add(rng, poisson(rng, rate * (1 - WEIGHT) * seconds), case.stable_errors, case.stable)


def fresh_tracks(rng: random.Random, case: Case, rate: float) -> dict[str, Counters]:
    """Tracks that already served a minute of traffic before the window: the gate judges deltas."""
    tracks = {"canary": Counters(), "stable": Counters()}
    grow(rng, tracks, case, rate, 60.0)
    return tracks


# --- the two modes ------------------------------------------------------------------------------------------------


def fixed_windows(case: Case, rate: float, count: int, seed: str) -> list[str]:
    from swiftdeploy import judge_canary

    rng = random.Random(seed)
    verdicts = []
    for _ in range(count):
        tracks = fresh_tracks(rng, case, rate)
        before = {name: t.text() for name, t in tracks.items()}
        grow(rng, tracks, case, rate, WINDOW)
        after = {name: t.text() for name, t in tracks.items()}
        verdicts.append(judge_canary(before, after, seconds=WINDOW).verdict)
    return verdicts


def screen(facts: dict[str, Any], th: dict[str, Any]) -> str:
    """The default policy's verdict comparisons (policies/canary.rego), for screening looks only (see the module
    doc): every verdict that ends a run is the policy's own."""
    ev = facts["evidence"]
    err, slow, ratio, relative = ev["error_rate"], ev["p99_latency"], ev["error_rate_vs_stable"], ev["p99_vs_stable"]
    if (
        err["lower_percent"] > th["max_error_rate_percent"]
        or slow["lower_percent"] > th["max_slow_percent"]
        or (ratio is not None and ratio["lower_ratio"] > th["max_error_rate_ratio"])
        or (
            relative is not None
            and relative["stable_requests"] >= th["min_requests"]
            and relative["lower_percent"] > th["max_slow_percent"]
        )
    ):
        return "deny"
    if (
        err["upper_percent"] < th["bad_error_rate_percent"]
        and slow["upper_percent"] < th["bad_slow_percent"]
        and facts["canary"]["requests"] >= th["min_requests"]
    ):
        return "allow"
    return "inconclusive"


@dataclass
class Audit:
    asked: int = 0  # looks the policy decided
    disagreements: int = 0


def scrape_of(name: str, t: Counters, at: float) -> Any:
    """What metrics.parse returns for t.text() (fixed mode parses the text; here the parse is skipped for speed)."""
    from swiftdeploy.metrics import Scrape

    requests = {("GET", "/", "200"): float(t.ok), ("GET", "/", "500"): float(t.errors)}
    buckets, running = {}, 0
    for le, count in zip(DURATION_BUCKETS, t.buckets or [0] * len(DURATION_BUCKETS), strict=False):
        running += count
        buckets[("GET", "/", le)] = float(running)
    buckets[("GET", "/", math.inf)] = float(t.ok + t.errors)
    return Scrape(url=name, at=at, requests=requests, buckets=buckets, gauges={"app_uptime_seconds": 1000.0})


def sequential_runs(
    case: Case, rate: float, count: int, seed: str, max_watch: float, audit_share: float = 0.03
) -> tuple[list[tuple[str, float]], Audit]:
    from swiftdeploy.judge import thresholds_of, watch
    from swiftdeploy.policy import select_engine

    rng = random.Random(seed)
    audit_rng = random.Random(f"audit:{seed}")
    engine = select_engine(None)  # the embedded engine, as `promote stable` on the local runtime
    thresholds = thresholds_of(None)
    audit = Audit()
    out = []
    for _ in range(count):
        tracks = fresh_tracks(rng, case, rate)
        clock = [0.0]

        def sleep(seconds: float, tracks: dict[str, Counters] = tracks, clock: list[float] = clock) -> None:
            grow(rng, tracks, case, rate, seconds)
            clock[0] += seconds

        def scrape(tracks: dict[str, Counters] = tracks, clock: list[float] = clock) -> dict[str, Any]:
            return {name: scrape_of(name, t, clock[0]) for name, t in tracks.items()}

        def decide(facts: dict[str, Any], clock: list[float] = clock) -> Any:
            guess = screen(facts, thresholds)
            last = clock[0] >= max_watch
            if guess == "inconclusive" and not last and audit_rng.random() >= audit_share:
                return Screened(guess)
            decision = engine.evaluate("canary", facts)
            audit.asked += 1
            audit.disagreements += decision.verdict != guess
            return decision

        look = watch(scrape, decide, thresholds, max_watch, interval=1.0, sleep=sleep, clock=lambda c=clock: c[0])
        out.append((look.decision.verdict, look.elapsed))
    return out, audit


@dataclass(frozen=True)
class Screened:
    """A look the screen called inconclusive (the watch goes on; see the module doc)."""

    verdict: str


def _task(args: tuple) -> tuple[str, int, float, list[Any], Audit | None]:
    mode, case_index, rate, count, seed, max_watch, audit_share = args
    case = CASES[case_index]
    if mode == "fixed":
        return mode, case_index, rate, fixed_windows(case, rate, count, seed), None
    runs, audit = sequential_runs(case, rate, count, seed, max_watch, audit_share)
    return mode, case_index, rate, runs, audit


def plan(windows: int, runs: int, seed: int, max_watch: float, audit: float, chunk: int = 100) -> list[tuple]:
    """Tasks of at most `chunk` windows, each seeded by (seed, mode, case, rate, chunk number)."""
    tasks = []
    for mode, total in (("sequential", runs), ("fixed", windows)):
        for case_index in range(len(CASES)):
            for rate in RATES:
                for number, start in enumerate(range(0, total, chunk)):
                    count = min(chunk, total - start)
                    seed_text = f"{seed}:{mode}:{case_index}:{rate}:{number}"
                    tasks.append((mode, case_index, rate, count, seed_text, max_watch, audit))
    return tasks


# --- the report ---------------------------------------------------------------------------------------------------


def shares(verdicts: list[str]) -> dict[str, float]:
    n = len(verdicts) or 1
    return {v: 100.0 * verdicts.count(v) / n for v in ("deny", "inconclusive", "allow")}


def time_quantile(runs: list[tuple[str, float]], q: float) -> str:
    """The q-quantile of the time to a verdict over all runs, an inconclusive run counting as never."""
    times = sorted(t for v, t in runs if v != "inconclusive")
    k = math.ceil(q * len(runs)) - 1
    if k < len(times):
        return f"{times[k]:.0f} s"
    return f"> {max((t for _, t in runs), default=0):.0f} s"


def cell(s: dict[str, float]) -> str:
    return f"{s['deny']:5.1f} / {s['inconclusive']:5.1f} / {s['allow']:5.1f}"


def report(results: dict, windows: int, runs: int, seed: int, max_watch: float, seconds: float) -> list[str]:
    out = [
        f"decision quality: {windows} fixed {WINDOW:g} s windows and {runs} sequential runs (a look every second, "
        f"at most {max_watch:g} s) per cell; canary weight {WEIGHT * 100:g}; seed {seed}; {seconds:.0f} s",
        "",
        "| case | total req/s | fixed 30 s: deny / inconclusive / allow % | sequential: deny / inconclusive / allow % "
        "| time to a verdict: median / p90 |",
        "|---|---:|---|---|---|",
    ]
    for i, case in enumerate(CASES):
        for rate in RATES:
            fixed = results.get(("fixed", i, rate), [])
            seq = results.get(("sequential", i, rate), [])
            seq_verdicts = [v for v, _ in seq]
            timing = f"{time_quantile(seq, 0.5)} / {time_quantile(seq, 0.9)}" if seq else "-"
            fixed_cell = cell(shares(fixed)) if fixed else "-"
            seq_cell = cell(shares(seq_verdicts)) if seq else "-"
            out.append(f"| {case.name} | {rate} | {fixed_cell} | {seq_cell} | {timing} |")
    out += ["", *goals(results)]
    return out


def goals(results: dict) -> list[str]:
    """The goals of the issue, checked against the table (both modes unless said)."""

    def rate_of(mode: str, case: int, rate: float, verdict: str) -> float | None:
        cell_results = results.get((mode, case, rate))
        if not cell_results:
            return None
        verdicts = cell_results if mode == "fixed" else [v for v, _ in cell_results]
        return shares(verdicts)[verdict]

    lines = ["goals:"]

    def check(text: str, values: list[float | None], ok) -> None:
        known = [v for v in values if v is not None]
        if not known:
            return
        worst = max(known) if ok(0.0) else min(known)
        lines.append(f"- {'met' if all(ok(v) for v in known) else 'NOT MET'}: {text} (worst cell {worst:.2f} %)")

    modes = ("fixed", "sequential")
    healthy = [0, 1, 2, 3]
    check(
        "healthy canary wrongly denied <= 1 % per cell",
        [rate_of(m, c, r, "deny") for m in modes for c in healthy for r in RATES],
        lambda v: v <= 1.0,
    )
    check(
        "1.5x slower canary denied <= 1 %", [rate_of(m, 4, r, "deny") for m in modes for r in RATES], lambda v: v <= 1.0
    )
    check(
        "canary at 2 % errors or worse, or slow, wrongly allowed <= 5 % per cell",
        [rate_of(m, c, r, "allow") for m in modes for c in (6, 7, 8, 9) for r in RATES],
        lambda v: v <= 5.0,
    )
    check(
        "5 % error canary at 50 req/s denied in >= 95 % of 30 s windows",
        [rate_of("fixed", 7, 50, "deny")],
        lambda v: v >= 95.0,
    )
    check(
        "chaos slow 0.6 s: 100 % denied", [rate_of(m, 8, r, "deny") for m in modes for r in RATES], lambda v: v >= 100.0
    )
    seq5 = results.get(("sequential", 7, 20))
    if seq5:
        median = sorted(t if v == "deny" else math.inf for v, t in seq5)[len(seq5) // 2]
        verdict = "met" if median <= 40 else "NOT MET"
        lines.append(f"- {verdict}: sequential, 5 % errors at 20 req/s: median time to deny <= 40 s ({median:.0f} s)")
    failing = results.get(("sequential", 9, 20))
    if failing:
        share = 100.0 * sum(1 for v, t in failing if v == "deny" and t <= 5) / len(failing)
        verdict = "met" if share >= 100 else "NOT MET"
        lines.append(f"- {verdict}: all requests failing, 20 req/s: denied within 5 s ({share:.1f} % of runs)")
    for c in healthy:
        quick = results.get(("sequential", c, 200))
        if quick:
            share = 100.0 * sum(1 for v, t in quick if v == "allow" and t <= 30) / len(quick)
            verdict = "met" if share >= 95 else "NOT MET"
            what = f"{CASES[c].name} at 200 req/s allowed within 30 s in >= 95 % of runs"
            lines.append(f"- {verdict}: {what} ({share:.1f} %)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=2000, help="fixed windows per cell")
    parser.add_argument("--runs", type=int, default=2000, help="sequential runs per cell")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-watch", type=float, default=120.0, help="longest a sequential run watches (s)")
    parser.add_argument("--audit", type=float, default=0.03, help="share of screened looks the policy re-decides")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tasks = plan(args.windows, args.runs, args.seed, args.max_watch, args.audit)
    results: dict[tuple[str, int, float], list[Any]] = {}
    audit = Audit()
    done = 0
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for mode, case_index, rate, chunk, checked in pool.map(_task, tasks, chunksize=1):
            results.setdefault((mode, case_index, rate), []).extend(chunk)
            if checked is not None:
                audit.asked += checked.asked
                audit.disagreements += checked.disagreements
            done += 1
            if sys.stderr.isatty():
                print(f"\r{done}/{len(tasks)} tasks, {time.monotonic() - started:.0f} s", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print("\n".join(report(results, args.windows, args.runs, args.seed, args.max_watch, time.monotonic() - started)))
    if args.runs:
        print(
            f"audit: the policy decided {audit.asked} sequential looks (every stop, every last look, {args.audit:.0%} "
            f"of the others); the screen disagreed with it {audit.disagreements} times"
        )
    return 1 if audit.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
