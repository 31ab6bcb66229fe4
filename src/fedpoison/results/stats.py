"""The spread shown next to a mean across seeds: standard deviation, standard error, or a 95 % t interval.

With ``n`` values :math:`x_1..x_n`, mean :math:`\\bar x` and sample standard
deviation :math:`s = \\sqrt{\\sum_i (x_i - \\bar x)^2 / (n - 1)}`:

* ``std``: :math:`s` (how much seeds differ; the default);
* ``sem``: the standard error of the mean, :math:`s / \\sqrt n`;
* ``ci95``: the half-width of the two-sided 95 % confidence interval of the
  mean under a normal model, :math:`t_{0.975,\\,n-1} \\cdot s / \\sqrt n`, with
  Student's t quantile (Student 1908; e.g. :math:`t_{0.975,1} = 12.706`,
  :math:`t_{0.975,4} = 2.776`), so a table cell ``m ± h`` reads as the
  interval :math:`[m - h, m + h]`.

One value gives no spread (NaN): the tables then show the mean alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

#: The spreads a table can show, by option value (``--stat``).
STATS: tuple[str, ...] = ("std", "sem", "ci95")
Stat = Literal["std", "sem", "ci95"]

#: How each spread is named in table titles and captions.
STAT_LABELS: dict[str, str] = {
    "std": "mean ± std over seeds",
    "sem": "mean ± standard error over seeds",
    "ci95": "mean ± 95 % CI half-width over seeds (Student's t)",
}


def check_stat(stat: str) -> str:
    """``stat`` if it names a spread, else a :class:`~fedpoison.errors.ConfigError` naming the choices."""
    if stat not in STATS:
        from fedpoison.errors import ConfigError

        raise ConfigError(f"--stat: expected one of {', '.join(STATS)}, got {stat!r}")
    return stat


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: the ``x`` with :math:`P(T_{df} \\le x) = p`."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def spread(values: Iterable[float], stat: str = "std") -> float:
    """The spread ``stat`` of ``values`` (NaNs left out; NaN with fewer than two values)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n < 2:
        return math.nan
    mean = sum(xs) / n
    s = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    if stat == "std":
        return s
    if stat == "sem":
        return s / math.sqrt(n)
    if stat == "ci95":
        return t_quantile(0.975, n - 1) * s / math.sqrt(n)
    check_stat(stat)
    raise AssertionError  # unreachable: check_stat raised
