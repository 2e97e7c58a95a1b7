"""Exact binomial statistics for the canary gate, pure Python (stdlib `math` only, no SciPy).

Fixed windows (one look at the data):
- `binom_cdf` / `binom_sf`: exact binomial tails, summed in log space from the far end of the tail, so a tail of
  1e-300 is as exact as one of 0.3.
- `cp_lower` / `cp_upper`: one-sided Clopper-Pearson bounds: the `p` at which the exact tail equals `alpha`
  (bisection). `cp_lower(x, n, a) > p0` is the same statement as "the exact test of p <= p0 rejects at level a".
- `ratio_lower`: the exact conditional test of "rate A is more than R times rate B" for two Poisson/binomial
  counts: given the total x_a + x_b, x_a is Binomial(x_a + x_b, pi) with pi = R n_a / (R n_a + n_b), so the
  Clopper-Pearson lower bound on pi turns into a lower bound on the rate ratio.

Sequential (the data are looked at again and again, and the watch stops at the first clear answer):
- `seq_lower` / `seq_upper`: confidence sequences from Bernoulli mixture likelihood ratios. For a null rate p0 the
  likelihood ratio of the data under q against p0, averaged over a Beta(a, b) prior truncated to the alternative
  (q > p0 for a lower bound, q < p0 for an upper bound), is a non-negative supermartingale under every rate of the
  null; by Ville's inequality it ever reaches 1/alpha with probability at most alpha, however often one looks.
  For integer a, b the truncated Beta integrals are exact binomial tails, so no special function is needed.
  The bound is the null rate at which the mixture reaches 1/alpha (bisection); it holds at every look at once.

Everything returns plain floats; rates are fractions (0.01 = 1 %). Nothing here compares a policy threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

# Prior shapes (integer Beta(a, b)) of the sequential mixtures: mass near the rates a gate meets in practice.
# Lower bounds (is the rate above p0?): Beta(1, 30) truncated to (p0, 1]: most mass between p0 and p0 + 10 %,
# and still enough near 1 that a canary failing every request is caught after three requests.
# Upper bounds (is the rate below p1?): Beta(1, 1) truncated to [0, p1): uniform, as healthy rates spread over it.
# Shares (the ratio test: which track did the errors come from?): Beta(1, 1) truncated to (pi0, 1].
LOWER_PRIOR = (1, 30)
UPPER_PRIOR = (1, 1)
SHARE_PRIOR = (1, 1)
_CACHE = 1 << 16  # bounds are pure functions of small integers: a watch and a benchmark ask for the same ones often
_BISECT_STEPS = 48  # bounds to within 2**-48 (4e-15): far below any threshold's precision


def _check(x: int, n: int) -> None:
    if not (isinstance(x, int) and isinstance(n, int)) or n < 0 or not 0 <= x <= n:
        raise ValueError(f"need integers 0 <= x <= n, got x={x!r}, n={n!r}")


def log_binom_pmf(k: int, n: int, p: float) -> float:
    """log P(X = k) for X ~ Binomial(n, p); -inf when impossible."""
    if k < 0 or k > n:
        return -math.inf
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _log_tail(start: int, stop: int, step: int, n: int, p: float) -> float:
    """log of sum_{k=start..stop (inclusive, by step=+-1)} P(X = k), summed from `start` outwards; `start` must be
    the end nearest the mode so that terms only shrink (then the sum stops when they stop mattering)."""
    first = log_binom_pmf(start, n, p)
    if first == -math.inf:
        return -math.inf
    total, term, k = 1.0, 1.0, start
    odds = p / (1.0 - p)
    while k != stop:
        if step > 0:  # P(k+1)/P(k)
            term *= (n - k) / (k + 1) * odds
        else:  # P(k-1)/P(k)
            term *= k / (n - k + 1) / odds
        k += step
        total += term
        if term < total * 1e-17:
            break
    return first + math.log(total)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exact."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    mode = math.floor((n + 1) * p)
    if k < mode:  # the lower tail, away from the mode: sum k, k-1, ..., 0
        return math.exp(_log_tail(k, 0, -1, n, p))
    return 1.0 - math.exp(_log_tail(k + 1, n, +1, n, p))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    mode = math.floor((n + 1) * p)
    if k > mode:  # the upper tail, away from the mode: sum k, k+1, ..., n
        return math.exp(_log_tail(k, n, +1, n, p))
    return 1.0 - math.exp(_log_tail(k - 1, 0, -1, n, p))


def _log_cdf(k: int, n: int, p: float) -> float:
    """log P(X <= k), accurate also when the tail is far below 1e-300."""
    if k < 0:
        return -math.inf
    if k >= n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return -math.inf
    if k < math.floor((n + 1) * p):
        return _log_tail(k, 0, -1, n, p)
    return math.log1p(-math.exp(_log_tail(k + 1, n, +1, n, p)))


def _log_sf(k: int, n: int, p: float) -> float:
    """log P(X >= k), accurate also when the tail is far below 1e-300."""
    if k <= 0:
        return 0.0
    if k > n or p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    if k > math.floor((n + 1) * p):
        return _log_tail(k, n, +1, n, p)
    return math.log1p(-math.exp(_log_tail(k - 1, 0, -1, n, p)))


def _bisect(increasing: Callable[[float], float], target: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """The p in [lo, hi] where the increasing function reaches `target` (p ends within 2**-48 of it)."""
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if increasing(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@lru_cache(maxsize=_CACHE)
def cp_lower(x: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound: the p with P(X >= x | n, p) = alpha (0 when x = 0)."""
    _check(x, n)
    if x == 0:
        return 0.0
    target = math.log(alpha)
    return _bisect(lambda p: _log_sf(x, n, p), target)


@lru_cache(maxsize=_CACHE)
def cp_upper(x: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound: the p with P(X <= x | n, p) = alpha (1 when x = n)."""
    _check(x, n)
    if x == n:
        return 1.0
    target = -math.log(alpha)
    return _bisect(lambda p: -_log_cdf(x, n, p), target)


def ratio_from_share(share: float, n_a: int, n_b: int) -> float:
    """The rate ratio (x_a/n_a)/(x_b/n_b) that makes pi = R n_a / (R n_a + n_b) equal `share`."""
    if share >= 1.0:
        return math.inf
    return share * n_b / ((1.0 - share) * n_a)


def share_from_ratio(ratio: float, n_a: int, n_b: int) -> float:
    """pi = R n_a / (R n_a + n_b): the share of all events that track A has when its rate is R times B's."""
    return ratio * n_a / (ratio * n_a + n_b)


def ratio_p_value(x_a: int, n_a: int, x_b: int, n_b: int, ratio: float) -> float:
    """Exact conditional p-value of "rate A <= ratio x rate B" against "more": P(Binomial(x_a + x_b, pi) >= x_a)."""
    _check(x_a, n_a)
    _check(x_b, n_b)
    if n_a == 0 or n_b == 0:
        return 1.0
    return binom_sf(x_a, x_a + x_b, share_from_ratio(ratio, n_a, n_b))


def ratio_lower(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float, *, sequential: bool = False) -> float:
    """Lower confidence bound on the rate ratio (x_a/n_a)/(x_b/n_b) from the conditional binomial (0 when A had no
    events, inf when only A had them and the bound on the share is 1). `sequential` uses the confidence sequence."""
    _check(x_a, n_a)
    _check(x_b, n_b)
    if n_a == 0 or n_b == 0 or x_a == 0:
        return 0.0
    total = x_a + x_b
    share = seq_lower(x_a, total, alpha, SHARE_PRIOR) if sequential else cp_lower(x_a, total, alpha)
    return ratio_from_share(share, n_a, n_b)


# --- sequential: Beta-mixture likelihood ratios (anytime-valid) -------------------------------------------------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def log_mixture_above(x: int, n: int, p0: float, prior: tuple[int, int] = LOWER_PRIOR) -> float:
    """log e-value against "rate <= p0": the likelihood ratio of q to p0, averaged over Beta(a, b) truncated to
    (p0, 1]. int_{p0}^1 q^(A-1) (1-q)^(B-1) dq = B(A, B) P(Binomial(A+B-1, p0) <= A-1) for integers A, B."""
    _check(x, n)
    a, b = prior
    if p0 <= 0.0:
        return math.inf if x > 0 else 0.0
    if p0 >= 1.0:
        return -math.inf
    numerator = _log_beta(x + a, n - x + b) + _log_cdf(x + a - 1, n + a + b - 1, p0)
    norm = _log_beta(a, b) + _log_cdf(a - 1, a + b - 1, p0)
    return numerator - norm - x * math.log(p0) - (n - x) * math.log1p(-p0)


def log_mixture_below(x: int, n: int, p1: float, prior: tuple[int, int] = UPPER_PRIOR) -> float:
    """log e-value against "rate >= p1": the likelihood ratio of q to p1, averaged over Beta(a, b) truncated to
    [0, p1). int_0^{p1} q^(A-1) (1-q)^(B-1) dq = B(A, B) P(Binomial(A+B-1, p1) >= A) for integers A, B."""
    _check(x, n)
    a, b = prior
    if p1 >= 1.0:
        return math.inf if x < n else 0.0
    if p1 <= 0.0:
        return -math.inf
    numerator = _log_beta(x + a, n - x + b) + _log_sf(x + a, n + a + b - 1, p1)
    norm = _log_beta(a, b) + _log_sf(a, a + b - 1, p1)
    return numerator - norm - x * math.log(p1) - (n - x) * math.log1p(-p1)


@lru_cache(maxsize=_CACHE)
def seq_lower(x: int, n: int, alpha: float, prior: tuple[int, int] = LOWER_PRIOR) -> float:
    """Anytime-valid lower bound: the largest p0 whose null "rate <= p0" the mixture rejects at level alpha (the
    mixture falls as p0 rises). 0 when even p0 -> 0 is not rejected."""
    _check(x, n)
    if x == 0:
        return 0.0
    target = -math.log(alpha)
    return _bisect(lambda p: -log_mixture_above(x, n, p, prior), -target)


@lru_cache(maxsize=_CACHE)
def seq_upper(x: int, n: int, alpha: float, prior: tuple[int, int] = UPPER_PRIOR) -> float:
    """Anytime-valid upper bound: the smallest p1 whose null "rate >= p1" the mixture rejects at level alpha (the
    mixture rises with p1). 1 when nothing below 1 is rejected."""
    _check(x, n)
    if x == n:
        return 1.0
    target = -math.log(alpha)
    return _bisect(lambda p: log_mixture_below(x, n, p, prior), target)


def upper_below(x: int, n: int, p1: float, alpha: float, *, sequential: bool = False) -> bool:
    """Is the upper bound of x/n below p1? The same as "the test of rate >= p1 rejects at level alpha", which is one
    tail (or one mixture) to evaluate instead of a bisection."""
    _check(x, n)
    if x == n:
        return False
    if sequential:
        return log_mixture_below(x, n, p1) >= -math.log(alpha)
    return _log_cdf(x, n, p1) <= math.log(alpha)


@lru_cache(maxsize=_CACHE)
def requests_needed(
    x: int, n: int, below: float, alpha: float, *, sequential: bool = False, limit: int = 10_000_000
) -> int | None:
    """How many requests in total (seen + more) it takes, if the rate seen so far (x/n) goes on, before the upper
    bound drops below `below`. None when the observed rate is not below `below` (no amount of data would do) or
    more than `limit` would be needed; n itself when the bound is already below."""
    _check(x, n)
    rate = x / n if n else 0.0
    if rate >= below:
        return None

    def clears(total: int) -> bool:
        return upper_below(min(total, round(rate * total)), total, below, alpha, sequential=sequential)

    if n and clears(n):
        return n
    lo, hi = max(n, 1), max(2 * n, 16)
    while not clears(hi):
        lo, hi = hi, 2 * hi
        if hi > limit:
            return None
    while hi - lo > 1:  # clears(hi) and not clears(lo)
        mid = (lo + hi) // 2
        if clears(mid):
            hi = mid
        else:
            lo = mid
    return hi
