"""Confidence intervals of mean CLIP scores and of paired changes, from summed moments.

Everything here works from ``(sum, sum of squares, count)``: the states a metric syncs across
ranks with one ``sum`` reduction, so an interval computed from synced moments is the interval of
all samples on all ranks, exactly, whatever the world size.

The interval of a mean over ``n`` prompts is Student's *t*: ``t(1 - alpha/2, n - 1) * s / sqrt(n)``
with ``s`` the sample standard deviation (``ddof=1``). For a change between two evaluations on
the same prompts and seeds, the same formula applied to the per-prompt differences is the
*paired* interval: it leaves out the spread between prompts (a hard prompt is hard for both
checkpoints), which is most of the spread of CLIP scores. :func:`prompts_needed` turns that into
numbers of images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from statistics import NormalDist

from torch import Tensor

__all__ = [
    "DEFAULT_LEVEL", "MIN_PAIRS", "delta_half_width", "delta_p_value", "half_width", "holm", "moments", "p_value",
    "prompts_needed", "spread_and_skew", "t_cdf", "t_quantile",
]

DEFAULT_LEVEL = 0.95
"""Confidence level of every interval the package reports."""

MIN_PAIRS = 10
"""Fewest paired prompts a difference interval is reported for, by the evaluator and by compare
alike. A t interval covers at any count when differences are normal, but CLIP-score differences
are skewed (a change often sits in a few prompts), and below about ten pairs the sample spread
misses that tail often enough for the interval to claim more than it covers."""

# Above this many degrees of freedom the Cornish-Fisher series (error O(dof**-3)) is exact to
# ~1e-13 and cheaper than the continued fraction, whose length grows with sqrt(dof).
_SERIES_DOF = 10_000


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"Expected `level` to be a number strictly between 0 and 1 but got {level!r}")
    return float(level)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # Lentz's evaluation of the continued fraction of the incomplete beta function.
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile of Student's *t* with ``dof`` degrees of freedom.

    Exact to about 1e-12 (bisection on the incomplete beta function; a series beyond
    10,000 degrees of freedom).

    Raises:
        ValueError: for a probability outside ``(0, 1)`` or ``dof`` below 1.

    Example:
        >>> round(t_quantile(0.975, 10), 4), round(t_quantile(0.975, 10**9), 4)
        (2.2281, 1.96)
    """
    _check_level(probability)
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"Expected `dof` to be an int of at least 1 but got {dof!r}")
    if probability == 0.5:
        return 0.0
    if probability < 0.5:
        return -_t_quantile(1.0 - probability, dof)
    return _t_quantile(float(probability), dof)


@functools.lru_cache(maxsize=4096)
def _t_quantile(probability: float, dof: int) -> float:
    """:func:`t_quantile` for checked arguments, ``probability > 0.5`` (cached: rounds repeat them)."""
    if dof > _SERIES_DOF:
        z = NormalDist().inv_cdf(probability)
        v = float(dof)
        return (
            z
            + (z**3 + z) / (4 * v)
            + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        )
    # P(|T| > t) = I_{dof / (dof + t^2)}(dof / 2, 1 / 2): solve for x, then t = sqrt(dof (1 - x) / x).
    tail = 2.0 * (1.0 - probability)
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _regularized_beta(dof / 2.0, 0.5, mid) < tail:
            low = mid
        else:
            high = mid
        if high - low < 1e-17:
            break
    x = 0.5 * (low + high)
    return math.sqrt(dof * (1.0 - x) / x)


def _float(value: float | Tensor) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def moments(values: Iterable[float]) -> tuple[float, float, int]:
    """``(sum, sum of squares, count)`` of ``values``, the input of :func:`half_width`."""
    total = total_sq = 0.0
    count = 0
    for value in values:
        total += value
        total_sq += value * value
        count += 1
    return total, total_sq, count


def half_width(
    total: float | Tensor, total_sq: float | Tensor, count: int | Tensor, level: float = DEFAULT_LEVEL
) -> float:
    """Half-width of the ``level`` interval of the mean of ``count`` samples with these moments.

    ``t(1 - alpha/2, n - 1) * s / sqrt(n)``, ``s`` the sample standard deviation. NaN below two
    samples (no spread to estimate).

    Raises:
        ValueError: for a ``level`` outside ``(0, 1)``.

    Example:
        >>> round(half_width(*moments([0.30, 0.32, 0.34])), 4)
        0.0497
    """
    level = _check_level(level)
    n = int(_float(count))
    if n < 2:
        return math.nan
    total, total_sq = _float(total), _float(total_sq)
    variance = max(total_sq - total * total / n, 0.0) / (n - 1)
    return t_quantile(0.5 + level / 2, n - 1) * math.sqrt(variance / n)


def prompts_needed(
    std: float, width: float, *, correlation: float | None = None, level: float = DEFAULT_LEVEL
) -> int:
    """Images an evaluation needs for a ``level`` interval of half-width ``width`` on a change.

    The change is this evaluation's mean minus the previous one's, the per-prompt scores of each
    having standard deviation ``std``. With ``correlation=None`` the two means are compared
    unpaired (independent prompts or seeds): the difference has variance ``2 std^2 / n``. With a
    correlation ``rho`` between the two checkpoints' scores of the same prompt and seed, the
    paired differences have variance ``2 (1 - rho) std^2``. The smallest ``n`` whose *t*
    interval is at most ``width`` is returned (at least 2).

    Raises:
        ValueError: for a non-positive ``std`` or ``width``, or a correlation outside ``[-1, 1)``.

    Example:
        >>> prompts_needed(0.04, 0.005), prompts_needed(0.04, 0.005, correlation=0.9)
        (495, 52)
    """
    level = _check_level(level)
    for name, value in (("std", std), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise ValueError(f"Expected `{name}` to be a positive number but got {value!r}")
    if correlation is not None and (
        isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not -1 <= correlation < 1
    ):
        raise ValueError(f"Expected `correlation` to be a number in [-1, 1) or None but got {correlation!r}")
    spread = std * math.sqrt(2.0 if correlation is None else 2.0 * (1.0 - correlation))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    n = max(2, math.ceil((z * spread / width) ** 2))
    while t_quantile(0.5 + level / 2, n - 1) * spread / math.sqrt(n) > width:
        n += 1
    return n


def t_cdf(value: float, dof: int) -> float:
    """``P(T <= value)`` for Student's *t* with ``dof`` degrees of freedom (the incomplete beta function).

    Raises:
        ValueError: for a non-finite ``value`` or ``dof`` below 1.

    Example:
        >>> round(t_cdf(2.2281, 10), 4)
        0.975
    """
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"Expected `dof` to be an int of at least 1 but got {dof!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"Expected a number but got {value!r}")
    if math.isinf(value):
        return 1.0 if value > 0 else 0.0
    tail = 0.5 * _regularized_beta(dof / 2.0, 0.5, dof / (dof + value * value))  # P(T > |value|)
    return 1.0 - tail if value >= 0 else tail


def p_value(total: float | Tensor, total_sq: float | Tensor, count: int | Tensor) -> float:
    """Two-sided *t*-test p-value that the mean of samples with these moments is zero.

    The test that matches :func:`half_width`: the interval excludes zero exactly when the p-value
    is below ``1 - level``. NaN below two samples; 0 for a non-zero mean without spread.

    Example:
        >>> round(p_value(*moments([0.01, 0.02, 0.03])), 4)
        0.0742
    """
    n = int(_float(count))
    if n < 2:
        return math.nan
    total, total_sq = _float(total), _float(total_sq)
    mean = total / n
    variance = max(total_sq - total * total / n, 0.0) / (n - 1)
    if variance == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = abs(mean) / math.sqrt(variance / n)
    return min(1.0, 2.0 * (1.0 - t_cdf(t, n - 1)))


def holm(p_values: Iterable[float], level: float = DEFAULT_LEVEL) -> list[tuple[float, bool]]:
    """Holm's step-down adjustment: ``(adjusted p-value, significant)`` for each p-value, in order.

    Controls the family-wise error rate (the chance of calling any true null "significant") at
    ``1 - level`` over the whole family, under any dependence between the tests. NaN p-values
    (too few pairs) are not tested, are never significant, and do not count in the family.

    Raises:
        ValueError: for a ``level`` outside ``(0, 1)``.

    Example:
        >>> [(round(p, 3), s) for p, s in holm([0.01, 0.04, 0.03])]
        [(0.03, True), (0.06, False), (0.06, False)]
    """
    level = _check_level(level)
    values = [float(p) for p in p_values]
    tested = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    family = len(tested)
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (family - rank) * p))  # adjusted p-values never decrease
        adjusted[index] = running
    # p + level < 1 rather than p < 1 - level: 1 - 0.95 is 0.05000000000000004 in floating point.
    return [(p, (not math.isnan(p)) and p + level < 1.0) for p in adjusted]


def spread_and_skew(total: float, total_sq: float, total_cube: float, count: float) -> tuple[int, float, float, float]:
    """``(n, mean, s, |g|)`` of samples with these sums: ``s`` the sample standard deviation
    (``ddof=1``), ``|g|`` the magnitude of the skewness (third central moment over ``s**3``; 0
    without spread). What the skew-corrected interval and its uses read from the synced sums.
    """
    n = int(count)
    mean = total / n
    sd = math.sqrt(max(total_sq - total * total / n, 0.0) / (n - 1))
    if sd == 0.0:
        return n, mean, 0.0, 0.0
    central3 = total_cube / n - 3.0 * mean * total_sq / n + 2.0 * mean**3
    return n, mean, sd, abs(central3 / sd / sd / sd)  # one division at a time: sd**3 underflows


def delta_half_width(
    total: float, total_sq: float, total_cube: float, count: float, level: float = DEFAULT_LEVEL
) -> float:
    """Half-width of the ``level`` interval of a mean change, corrected for skewness.

    ``t s / sqrt(n) + |g| s (2 t^2 + 1) / (6 n)``: the t half-width, widened on both sides by the
    shift the one-term Edgeworth expansion of the studentized mean gives a skewed sample (``g``:
    the sample skewness, from the third moment). Symmetric around the mean, so it contains the
    skew-corrected interval. For symmetric differences the extra term is noise of order
    ``s / n``: about 1% of the half-width at 150 pairs. NaN below two samples.

    Args:
        total, total_sq, total_cube: sums of the differences, their squares and their cubes.
        count: how many differences.
        level: confidence level.

    Example:
        >>> round(delta_half_width(0.3, 0.09, 0.027, 10), 4)  # one of ten prompts moved by 0.3
        0.1083
    """
    if count < 2:
        return math.nan
    base = half_width(total, total_sq, int(count), level)
    n, _, sd, skew = spread_and_skew(total, total_sq, total_cube, count)
    if sd == 0.0:
        return base
    t = t_quantile(0.5 + level / 2, n - 1)
    return base + skew * sd * (2.0 * t * t + 1.0) / (6.0 * n)


def delta_p_value(total: float, total_sq: float, total_cube: float, count: float) -> float:
    """Two-sided p-value of "no change" that matches :func:`delta_half_width`.

    The ``1 - level`` at which the skew-corrected interval's edge reaches zero: the half-width
    ``t s / sqrt(n) + |g| s (2 t^2 + 1) / (6 n)`` is quadratic in the quantile ``t``, so the ``t``
    whose half-width is ``|mean|`` is a root, and the p-value its two-sided tail. The interval of
    level ``L`` excludes zero exactly when this is below ``1 - L``. NaN below two samples; 1 for a zero mean,
    0 for a non-zero mean without spread.

    Example:
        >>> p = delta_p_value(0.3, 0.0095, 0.00027, 10)  # ten prompts moved by 0.03 each, give or take
        >>> 0 <= p < 0.05
        True
    """
    if int(count) < 2:
        return math.nan
    n, mean, sd, skew = spread_and_skew(total, total_sq, total_cube, count)
    if mean == 0.0:
        return 1.0
    if sd == 0.0:
        return 0.0
    # half(t) = a t^2 + b t + skew s / (6 n), increasing for t >= 0; solve half(t) = |mean|.
    a, b, c = skew * sd / (3.0 * n), sd / math.sqrt(n), skew * sd / (6.0 * n) - abs(mean)
    if c >= 0.0:
        return 1.0  # even the narrowest interval reaches zero
    denominator = b + math.sqrt(b * b - 4.0 * a * c)
    if denominator == 0.0:
        return 0.0
    t = -2.0 * c / denominator  # the positive root, stable as the skew goes to 0
    return min(1.0, 2.0 * (1.0 - t_cdf(t, n - 1)))
