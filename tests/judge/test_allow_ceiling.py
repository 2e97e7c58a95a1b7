"""benchmarks/allow_ceiling.py: the exact ceilings docs/policies.md cites for "allowed within 30 s at 200 req/s".
The dynamic programme is checked against direct binomial sums, and the ordering any valid rule must obey holds."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from swiftdeploy import stats

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "allow_ceiling.py"
N, BAD, ALPHA = 600, 0.02, 0.05
LOOKS = [20 * t for t in range(1, 31)]


@pytest.fixture(scope="module")
def ac():
    spec = importlib.util.spec_from_file_location("allow_ceiling", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["allow_ceiling"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("allow_ceiling", None)


def test_neyman_pearson_has_size_alpha_at_the_bad_rate(ac) -> None:
    # the most powerful test allows a 2 % canary exactly 5 % of the time, and is the ceiling for the fixed rule
    assert ac.neyman_pearson(N, BAD, ALPHA, BAD) == pytest.approx(ALPHA, abs=1e-12)
    for q in ac.HEALTHY:
        fixed = ac.allowed_by(q, [N], lambda x, n: stats.upper_below(x, n, BAD, ALPHA))
        assert fixed <= ac.neyman_pearson(N, BAD, ALPHA, q) + 1e-12


def test_one_look_equals_the_binomial_sum(ac) -> None:
    # one look at 600 requests: the programme's answer is P(X <= 6), the fixed window's largest allowed count
    allowed = [x for x in range(N) if stats.upper_below(x, N, BAD, ALPHA)]
    assert max(allowed) == 6 and allowed == list(range(7))
    got = ac.allowed_by(0.005, [N], lambda x, n: stats.upper_below(x, n, BAD, ALPHA))
    assert got == pytest.approx(stats.binom_cdf(6, N, 0.005), rel=1e-9)


def test_the_ceilings_docs_cite(ac) -> None:
    watch = lambda x, n: stats.upper_below(x, n, BAD, ALPHA, sequential=True)  # noqa: E731
    best = lambda x, n: ac.max_log_lr(x, n, BAD) >= -math.log(ALPHA)  # noqa: E731
    at_1 = ac.neyman_pearson(N, BAD, ALPHA, 0.01)
    assert at_1 == pytest.approx(0.625, abs=0.001) and at_1 < 0.95  # no rule allows a 1 % canary 95 % of the time
    assert ac.allowed_by(0.005, LOOKS, best) == pytest.approx(0.890, abs=0.001)
    assert ac.allowed_by(0.005, LOOKS, watch) == pytest.approx(0.765, abs=0.001)
    # the best prior is an upper bound on the watch at every rate, and every mixture stops at 4 errors in 600
    for q in ac.HEALTHY:
        assert ac.allowed_by(q, LOOKS, watch) <= ac.allowed_by(q, LOOKS, best) + 1e-12
    assert best(4, N) and not best(5, N) and not watch(5, N)
