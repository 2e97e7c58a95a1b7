"""How fast may a healthy canary be allowed at all? Exact ceilings for "allowed within 30 s", no simulation.

The gate promises that a canary failing 2 % of its requests (the bad rate) is wrongly allowed at most 5 % of the
time. Every allow rule that keeps that promise is a test of "rate >= 2 %" at level 5 %, and the Neyman-Pearson
lemma bounds how often any such test can allow a canary whose real rate is q: the most powerful one allows when
the error count is small enough (randomised at the edge). This script computes, for a canary seeing N requests in
30 s (200 req/s total, canary weight 10: N = 600; looks every second, 20 requests apart), the exact probability of
an allow within 30 s for healthy error rates q of 0 %, 0.2 %, 0.5 % and 1 %, under:

- neyman-pearson: the best possible test of the 600 requests, sequential or not (an upper bound for any rule);
- fixed window: `swiftdeploy.stats.upper_below(x, N, 2 %, 5 %)`, the one-look Clopper-Pearson rule
  `judge_canary` uses for a fixed 30 s window;
- best mixture: an anytime-valid rule from the likelihood-ratio family the watch uses, with all the prior's mass
  at the best rate for each count (the likelihood ratio's maximum must reach 1/alpha): an upper bound for every
  confidence sequence of that family, at every look;
- watch: the rule the `promote stable` watch applies at every look (`upper_below(..., sequential=True)`).

Exact: a dynamic programme over the error count, request by request, removing the runs allowed at each look. Only
the error rule is modelled (the latency rule of a healthy canary settles sooner: it has no slow request) and the
deny side is ignored (it only takes runs away from an allow), so "watch" slightly over-states the watch; compare
it with the simulated sequential column of benchmarks/decision_quality.py.

    .venv/bin/python benchmarks/allow_ceiling.py [--rate 200] [--seconds 30] [--bad 2] [--confidence 95]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from swiftdeploy import stats

HEALTHY = (0.0, 0.002, 0.005, 0.01)


def neyman_pearson(n: int, bad: float, alpha: float, q: float) -> float:
    """The most powerful level-alpha test of "rate >= bad" against rate q: allow when x < k, and with probability
    gamma when x == k, where P(X < k | bad) + gamma P(X == k | bad) = alpha."""
    k = 0
    while stats.binom_cdf(k, n, bad) <= alpha:
        k += 1
    below = stats.binom_cdf(k - 1, n, bad) if k else 0.0
    pmf = math.exp(stats.log_binom_pmf(k, n, bad))
    gamma = (alpha - below) / pmf
    power = stats.binom_cdf(k - 1, n, q) if k else 0.0
    return power + gamma * math.exp(stats.log_binom_pmf(k, n, q))


def max_log_lr(x: int, n: int, bad: float) -> float:
    """log of the largest likelihood ratio of any rate below `bad` against `bad` (at the observed rate)."""
    rate = x / n
    if rate >= bad:
        return 0.0
    log_q = math.log(rate) if x else 0.0
    return x * (log_q - math.log(bad)) + (n - x) * (math.log1p(-rate) - math.log1p(-bad))


def allowed_by(q: float, looks: list[int], allows: Callable[[int, int], bool], cap: int = 80) -> float:
    """P(the rule allows at one of `looks` (request counts)) when each request fails with probability q."""
    dist = [1.0] + [0.0] * cap  # dist[x]: P(x errors so far and not allowed yet); mass above cap is dropped
    allowed, n = 0.0, 0
    for look in looks:
        while n < look:
            dist = [dist[x] * (1 - q) + (dist[x - 1] * q if x else 0.0) for x in range(cap + 1)]
            n += 1
        for x in range(cap + 1):
            if dist[x] and allows(x, n):
                allowed += dist[x]
                dist[x] = 0.0
    return allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="total requests per second (canary weight 10)")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--bad", type=float, default=2.0, help="bad_error_rate_percent")
    parser.add_argument("--confidence", type=float, default=95.0, help="allow_confidence_percent")
    args = parser.parse_args()
    bad, alpha = args.bad / 100.0, 1.0 - args.confidence / 100.0
    per_look = round(args.rate * 0.10)
    looks = [per_look * t for t in range(1, args.seconds + 1)]
    n = looks[-1]
    rules: dict[str, Callable[[int, int], bool]] = {
        "fixed window": lambda x, m: m == n and stats.upper_below(x, m, bad, alpha),
        "best mixture": lambda x, m: max_log_lr(x, m, bad) >= -math.log(alpha),
        "watch": lambda x, m: stats.upper_below(x, m, bad, alpha, sequential=True),
    }
    print(f"{args.rate:g} req/s total, {per_look} canary requests a second, {n} in {args.seconds} s; "
          f"allow rule: shown below {args.bad:g} % with {args.confidence:g} % confidence")  # fmt: skip
    print(f"{'canary error rate':>18} | {'neyman-pearson':>14} | " + " | ".join(f"{name:>12}" for name in rules))
    for q in HEALTHY:
        row = [neyman_pearson(n, bad, alpha, q)] + [allowed_by(q, looks, rule) for rule in rules.values()]
        print(f"{q * 100:>17g}% | " + " | ".join(f"{100 * p:>11.1f} %" for p in row[:1] + row[1:]))
    largest = max((x for x in range(n) if max_log_lr(x, n, bad) >= -math.log(alpha)), default=None)
    fixed = max((x for x in range(n) if stats.upper_below(x, n, bad, alpha)), default=None)
    print(f"at {n} requests: the fixed window allows up to {fixed} errors; no likelihood-ratio mixture allows more "
          f"than {largest} (its best prior's ratio at {largest + 1 if largest is not None else 0} errors is "
          f"{math.exp(max_log_lr((largest or 0) + 1, n, bad)):.1f} < {1 / alpha:g})")  # fmt: skip


if __name__ == "__main__":
    main()
