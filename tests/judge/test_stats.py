"""swiftdeploy.stats against known values: exact binomial tails (big-integer arithmetic), Clopper-Pearson bounds from
published tables, the conditional ratio test, the Beta-mixture e-value against numerical integration, and the
anytime validity of the sequential test (seeded)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from swiftdeploy import stats


def exact_sf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)), Fraction(0))


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (8, 10, Fraction(1, 2)),
        (0, 10, Fraction(1, 2)),
        (13, 600, Fraction(1, 100)),
        (12, 600, Fraction(1, 100)),
        (1, 150, Fraction(1, 50)),
        (50, 60, Fraction(1, 100)),  # ~1e-86: summed from the far end of the tail, not 1 - (almost 1)
        (300, 600, Fraction(1, 2)),
        (599, 600, Fraction(99, 100)),
    ],
)
def test_binomial_tails_are_exact(k: int, n: int, p: Fraction) -> None:
    sf = exact_sf(k, n, p)
    assert stats.binom_sf(k, n, float(p)) == pytest.approx(float(sf), rel=1e-11)
    assert stats.binom_cdf(k - 1, n, float(p)) == pytest.approx(float(1 - sf), rel=1e-11, abs=1e-300)


def test_binomial_tail_known_values() -> None:
    assert stats.binom_cdf(3, 10, 0.5) == pytest.approx(176 / 1024, rel=1e-14)
    assert stats.binom_sf(8, 10, 0.5) == pytest.approx(56 / 1024, rel=1e-14)
    assert stats.binom_sf(0, 5, 0.3) == 1.0 and stats.binom_sf(6, 5, 0.3) == 0.0
    assert stats.binom_sf(1, 5, 0.0) == 0.0 and stats.binom_cdf(4, 5, 1.0) == 0.0


# Exact two-sided 95 % intervals (2.5 % in each tail) as printed in the standard tables (Clopper & Pearson 1934;
# e.g. Geigy Scientific Tables), to 4 decimals.
CP_TABLE = [
    (0, 10, 0.0, 0.3085),
    (1, 10, 0.0025, 0.4450),
    (5, 10, 0.1871, 0.8129),
    (2, 20, 0.0123, 0.3170),
    (10, 50, 0.1003, 0.3372),
    (5, 100, 0.0164, 0.1128),
]


@pytest.mark.parametrize(("x", "n", "lower", "upper"), CP_TABLE)
def test_clopper_pearson_matches_the_tables(x: int, n: int, lower: float, upper: float) -> None:
    assert round(stats.cp_lower(x, n, 0.025), 4) == lower
    assert round(stats.cp_upper(x, n, 0.025), 4) == upper


def test_clopper_pearson_is_the_exact_test_inverted() -> None:
    # the bound is where the exact tail equals alpha; "lower bound > p0" is "P(X >= x | p0) < alpha"
    for x, n in [(1, 20), (13, 600), (6, 150), (40, 41)]:
        lower, upper = stats.cp_lower(x, n, 0.01), stats.cp_upper(x, n, 0.05)
        assert stats.binom_sf(x, n, lower) == pytest.approx(0.01, rel=1e-9)
        assert stats.binom_cdf(x, n, upper) == pytest.approx(0.05, rel=1e-9)
    assert stats.cp_lower(13, 600, 0.01) > 0.01 > stats.cp_lower(12, 600, 0.01)
    assert stats.binom_sf(13, 600, 0.01) < 0.01 < stats.binom_sf(12, 600, 0.01)


def test_zero_events_give_the_rule_of_three_and_the_issue_example() -> None:
    assert stats.cp_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-12)  # ~3/n
    assert round(100 * stats.cp_upper(0, 612, 0.05), 2) == 0.49  # "612 requests, 0 errors: below 0.49 %"
    assert stats.cp_lower(0, 612, 0.01) == 0.0 and stats.cp_upper(612, 612, 0.05) == 1.0


def test_requests_needed_for_a_clean_canary() -> None:
    # 0 errors: the 95 % upper bound drops under 2 % from n = 149 (1 - 0.05 ** (1/n) < 0.02)
    assert stats.requests_needed(0, 0, 0.02, 0.05) == 149
    assert stats.cp_upper(0, 149, 0.05) < 0.02 <= stats.cp_upper(0, 148, 0.05)
    assert stats.requests_needed(0, 600, 0.02, 0.05) == 600  # already enough
    assert stats.requests_needed(3, 100, 0.02, 0.05) is None  # 3 % seen: no amount of data shows < 2 %
    needed = stats.requests_needed(1, 100, 0.02, 0.05)
    assert needed is not None and stats.cp_upper(round(needed / 100), needed, 0.05) < 0.02
    # a confidence sequence needs more: it holds at every look
    assert stats.requests_needed(0, 0, 0.02, 0.05, sequential=True) > 149


def test_conditional_ratio_test() -> None:
    # equal traffic, ratio 2: each event is the canary's with probability 2/3; 3 of 3 has p = (2/3)**3
    assert stats.ratio_p_value(3, 100, 0, 100, 2.0) == pytest.approx((2 / 3) ** 3, rel=1e-12)
    assert stats.share_from_ratio(1.5, 600, 5400) == pytest.approx(900 / 6300)
    # the bound inverts the test: "lower ratio bound > R" is "p-value < alpha"
    for x_a, x_b in [(7, 10), (6, 10), (19, 54), (18, 54)]:
        significant = stats.ratio_p_value(x_a, 600, x_b, 5400, 1.5) < 0.01
        assert (stats.ratio_lower(x_a, 600, x_b, 5400, 0.01) > 1.5) is significant
    assert stats.ratio_lower(0, 600, 10, 5400, 0.01) == 0.0 and stats.ratio_lower(3, 600, 0, 0, 0.01) == 0.0


def test_mixture_e_value_matches_numerical_integration() -> None:
    """The truncated-Beta integral is an exact binomial tail: compare with Simpson's rule."""

    def integrate(f, lo: float, hi: float, steps: int = 20000) -> float:
        h = (hi - lo) / steps
        total = f(lo) + f(hi) + sum((4 if i % 2 else 2) * f(lo + i * h) for i in range(1, steps))
        return total * h / 3

    for x, n, p0, (a, b) in [(4, 80, 0.01, (1, 30)), (2, 300, 0.02, (1, 1)), (9, 40, 0.1, (2, 5))]:

        def likelihood_ratio(q: float, x: int = x, n: int = n, p0: float = p0) -> float:
            return (q / p0) ** x * ((1 - q) / (1 - p0)) ** (n - x)

        def prior(q: float, a: int = a, b: int = b) -> float:
            return q ** (a - 1) * (1 - q) ** (b - 1)

        above = integrate(lambda q: likelihood_ratio(q) * prior(q), p0, 1) / integrate(prior, p0, 1)
        below = integrate(lambda q: likelihood_ratio(q) * prior(q), 0, p0) / integrate(prior, 0, p0)
        assert math.exp(stats.log_mixture_above(x, n, p0, (a, b))) == pytest.approx(above, rel=1e-6)
        assert math.exp(stats.log_mixture_below(x, n, p0, (a, b))) == pytest.approx(below, rel=1e-6)


def test_sequential_bounds_are_the_mixture_inverted_and_wider_than_fixed() -> None:
    for x, n in [(1, 10), (4, 80), (13, 600), (0, 300), (30, 30)]:
        lower, upper = stats.seq_lower(x, n, 0.01), stats.seq_upper(x, n, 0.05)
        assert lower <= stats.cp_lower(x, n, 0.01) and upper >= stats.cp_upper(x, n, 0.05)
        if lower > 0:
            assert (
                stats.log_mixture_above(x, n, lower * 0.999)
                > math.log(100)
                > stats.log_mixture_above(x, n, lower * 1.001)
            )
        if upper < 1:
            assert (
                stats.log_mixture_below(x, n, upper * 1.001)
                > math.log(20)
                > stats.log_mixture_below(x, n, upper * 0.999)
            )
    # a canary failing every request is caught after three (1 % threshold, 99 % confidence)
    assert stats.seq_lower(3, 3, 0.01) > 0.01 > stats.seq_lower(2, 2, 0.01)


def test_looking_after_every_request_keeps_the_sequential_test_valid() -> None:
    """At the null boundary (rate exactly p0), the mixture crosses 1/alpha on at most alpha of the paths, however
    often one looks; the fixed-window test applied at every look would not hold its level (seeded)."""
    rng = random.Random(20240513)
    p0, alpha, paths, steps = 0.05, 0.05, 400, 400
    threshold = math.log(1 / alpha)
    crossed_mixture = crossed_repeated_fixed = 0
    for _ in range(paths):
        x = 0
        mixture = fixed = False
        for n in range(1, steps + 1):
            x += rng.random() < p0
            if not mixture and stats.log_mixture_above(x, n, p0) >= threshold:
                mixture = True
            if not fixed and stats.binom_sf(x, n, p0) < alpha:
                fixed = True
            if mixture and fixed:
                break
        crossed_mixture += mixture
        crossed_repeated_fixed += fixed
    assert crossed_mixture / paths <= alpha
    assert crossed_repeated_fixed / paths > 2 * alpha  # why the watch needs the sequential bounds


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        stats.cp_lower(5, 3, 0.05)
    with pytest.raises(ValueError):
        stats.cp_upper(-1, 3, 0.05)


def test_the_one_evaluation_check_agrees_with_the_bound() -> None:
    """requests_needed asks "is the upper bound below p1?" with one tail (or mixture) instead of a bisection."""
    for x, n in [(0, 149), (0, 148), (3, 600), (6, 600), (7, 600), (0, 224), (0, 223), (12, 1300)]:
        for sequential in (False, True):
            bound = (stats.seq_upper if sequential else stats.cp_upper)(x, n, 0.05)
            assert stats.upper_below(x, n, 0.02, 0.05, sequential=sequential) is (bound < 0.02)
