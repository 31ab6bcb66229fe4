"""Per-client signals over one round's update matrix, and robust z-scores.

Every function here is pure and vectorised: it reads an ``(n, d)`` update
matrix (one row per participant) and returns new ``(n,)`` tensors on the rows'
device, never looping in Python over clients or coordinates. Non-finite rows
(NaN or Inf anywhere) never poison the statistics of the others: centres and
scales are computed over the finite rows, and a non-finite row's signal is NaN,
which :func:`oriented_z` turns into maximal suspicion.

Signals and the direction in which each is suspicious:

============== ===================================================== ==========
name           definition                                            suspicious
============== ===================================================== ==========
norm           :math:`\\|u_i\\|_2`                                   high
cosine         :math:`\\cos(u_i, c)`                                 low
distance       :math:`\\|u_i - c\\|_2`                               high
krum           Krum score: sum of squared distances to the           high
               :math:`n - f - 2` nearest other rows
sign_agreement share of coordinates with :math:`\\mathrm{sign}(u_{ij})  low
               = \\mathrm{sign}(c_j)`, over coordinates with
               :math:`c_j \\ne 0`
============== ===================================================== ==========

where :math:`c` is the robust centre: the coordinate-wise median of the
round's finite rows (:func:`finite_median`) or the previous round's aggregate.

The maths (norms, cosines, distances, Krum scores, the median) is
:mod:`fedpoison.core`'s, the same that the aggregation rules and the attacks
call; this module adds the auditor's policy for non-finite rows.

References
----------
- Robust z-score with the median absolute deviation: Iglewicz & Hoaglin 1993,
  *How to Detect and Handle Outliers* (modified z-score; the mean absolute
  deviation fallback when MAD is zero); Rousseeuw & Croux 1993 for the
  consistency constant 1.4826.
- Krum score: Blanchard et al. 2017, 'Machine Learning with Adversaries:
  Byzantine Tolerant Gradient Descent' (NeurIPS), the sum over the
  :math:`n - f - 2` closest rows of the squared Euclidean distance.
- Sign agreement: the sign statistics of DnC/SignGuard (Xu et al. 2022,
  'SignGuard: Byzantine-robust Federated Learning through Collaborative
  Malicious Gradient Filtering'), reduced to agreement with the centre.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from fedpoison.core.order_statistics import coordinate_median, median_by_sort
from fedpoison.core.rows import (
    cosine_to,
    distances_to,
    finite_rows,
    krum_scores,
    pairwise_sq_distances,
    row_norms,
)

#: Consistency constant: ``1.4826 * MAD`` estimates the standard deviation of a normal sample.
MAD_SCALE = 1.4826
#: ``1.2533 * mean absolute deviation`` estimates it too (Iglewicz & Hoaglin's fallback for MAD = 0).
MEAN_AD_SCALE = 1.2533

Tail = Literal["upper", "lower", "both"]

#: Every signal :func:`compute_signals` knows, with the tail in which it is suspicious.
SIGNAL_TAILS: dict[str, Tail] = {
    "norm": "upper",
    "cosine": "lower",
    "distance": "upper",
    "krum": "upper",
    "sign_agreement": "lower",
}


def _signal(values: Tensor, ok: Tensor) -> Tensor:
    """``values`` with NaN on the rows that are not ``ok`` (non-finite rows)."""
    return values.masked_fill(~ok, float("nan"))


def _finite_part(updates: Tensor, ok: Tensor) -> Tensor:
    """``updates`` with its non-finite rows zeroed, so they cannot disturb any shared computation."""
    if bool(ok.all()):
        return updates
    return torch.where(ok[:, None], updates, torch.zeros((), dtype=updates.dtype, device=updates.device))


def finite_median(updates: Tensor) -> Tensor:
    """``(d,)`` coordinate-wise median of the finite rows (mean of the two middle values for even n).

    :func:`fedpoison.core.order_statistics.coordinate_median` over the rows
    without NaN or Inf; zeros when no row is finite.

    Example
    -------
    >>> finite_median(torch.tensor([[0.0, 1.0], [2.0, 5.0], [4.0, 3.0], [100.0, -1.0]]))
    tensor([3., 2.])
    """
    ok = finite_rows(updates)
    if not bool(ok.any()):
        return updates.new_zeros(updates.shape[1])
    return coordinate_median(updates if bool(ok.all()) else updates[ok])


def norm_signal(updates: Tensor) -> Tensor:
    """``(n,)`` L2 norm of each row (:func:`fedpoison.core.rows.row_norms`); NaN for a non-finite row."""
    ok = finite_rows(updates)
    return _signal(row_norms(_finite_part(updates, ok)), ok)


def cosine_signal(updates: Tensor, centre: Tensor) -> Tensor:
    """``(n,)`` cosine of each row to ``centre`` (:func:`fedpoison.core.rows.cosine_to`); NaN for a non-finite row."""
    ok = finite_rows(updates)
    return _signal(cosine_to(_finite_part(updates, ok), centre), ok)


def distance_signal(updates: Tensor, centre: Tensor) -> Tensor:
    """``(n,)`` distance of each row to ``centre`` (:func:`fedpoison.core.rows.distances_to`); NaN for a non-finite row."""
    ok = finite_rows(updates)
    return _signal(distances_to(_finite_part(updates, ok), centre), ok)


def default_krum_f(n: int) -> int:
    """The largest f Krum tolerates for n rows, :math:`\\lfloor (n - 3) / 2 \\rfloor` (at least 0).

    An auditor does not know how many attackers there are; assuming the most
    Krum can tolerate makes the score look at the closest half of the rows.
    """
    return max((n - 3) // 2, 0)


def krum_signal(updates: Tensor, f: int | None = None) -> Tensor:
    """``(n,)`` Krum score of each row, the server's (:func:`fedpoison.core.rows.krum_scores`).

    .. math:: s(i) = \\sum_{j \\in N_i} \\|u_i - u_j\\|^2

    with :math:`N_i` the :func:`~fedpoison.core.rows.krum_neighbours` rows
    closest to :math:`u_i`: :math:`n - f - 2`, clamped to ``[1, n - 1]`` so
    the score is defined for every ``n >= 2`` (zero for ``n == 1``), ``n``
    counting the finite rows. ``f`` defaults to :func:`default_krum_f` of all
    rows. Non-finite rows score NaN and are never anyone's neighbour.

    Example
    -------
    >>> krum_signal(torch.tensor([[0.0], [1.0], [10.0]]), f=0)   # k = 1 neighbour
    tensor([ 1.,  1., 81.])
    """
    n = updates.shape[0]
    f = default_krum_f(n) if f is None else f
    if f < 0:
        raise ValueError(f"krum_signal: expected f >= 0, got f={f}")
    ok = finite_rows(updates)
    scores = krum_scores(pairwise_sq_distances(_finite_part(updates, ok)), f, valid=ok)
    return _signal(scores, ok & torch.isfinite(scores))


def sign_agreement(updates: Tensor, centre: Tensor) -> Tensor:
    """``(n,)`` share of the centre's non-zero coordinates where the row has the same sign.

    Rows with a zero coordinate disagree there. With an all-zero centre every
    row scores 1 (nothing to disagree with).
    """
    ref = torch.sign(centre)
    nz = ref != 0
    count = int(nz.sum())
    if count == 0:
        out = updates.new_ones(updates.shape[0])
    else:
        out = (torch.sign(updates[:, nz]) == ref[nz]).sum(dim=1).to(updates.dtype) / count
    return out.masked_fill(~finite_rows(updates), float("nan"))


def robust_z(values: Tensor, eps: float = 1e-12) -> Tensor:
    """``(n,)`` robust z-score of each value: distance to the median in MAD units.

    .. math:: z_i = \\frac{x_i - \\operatorname{med}(x)}{1.4826\\, \\operatorname{MAD}(x)},
        \\qquad \\operatorname{MAD}(x) = \\operatorname{med}_i |x_i - \\operatorname{med}(x)|

    over the finite values. When the MAD is zero (more than half the values
    are equal), the scale falls back to :math:`1.2533` times the mean
    absolute deviation (Iglewicz & Hoaglin 1993); when that is zero too,
    every finite value equals the median and scores 0. Non-finite values stay
    NaN. The median of an even count is the mean of the two middle values.

    Example
    -------
    >>> robust_z(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])).round(decimals=2)
    tensor([-1.3500, -0.6700,  0.0000,  0.6700, 65.4300])
    """
    ok = torch.isfinite(values)
    out = torch.full_like(values, float("nan"))
    if not bool(ok.any()):
        return out
    x = values[ok]
    med = median_by_sort(x)
    dev = (x - med).abs()
    scale = MAD_SCALE * median_by_sort(dev)
    if float(scale) <= eps:
        scale = MEAN_AD_SCALE * dev.mean()
    if float(scale) <= eps:
        out[ok] = torch.zeros_like(x)
        return out
    out[ok] = (x - med) / scale
    return out


def oriented_z(values: Tensor, tail: Tail) -> Tensor:
    """Robust z-score turned so that positive means suspicious; NaN becomes ``+inf``.

    ``upper``: large values are suspicious (``z``); ``lower``: small ones
    (``-z``); ``both``: either (``|z|``). A non-finite signal (from a
    non-finite row) is maximally suspicious.
    """
    if tail not in ("upper", "lower", "both"):
        raise ValueError(f"oriented_z: expected tail 'upper', 'lower' or 'both', got {tail!r}")
    z = robust_z(values)
    z = -z if tail == "lower" else z.abs() if tail == "both" else z
    return z.nan_to_num(nan=float("inf"))


def compute_signals(
    updates: Tensor,
    names: Iterable[str],
    *,
    centre: Tensor | None = None,
    krum_f: int | None = None,
) -> dict[str, Tensor]:
    """The named signals of every row, as ``{name: (n,) tensor}``.

    ``centre`` defaults to :func:`finite_median` of ``updates`` (computed
    only when a signal needs it). Unknown names raise ``ValueError`` naming
    the known ones.
    """
    names = list(names)
    unknown = [s for s in names if s not in SIGNAL_TAILS]
    if unknown:
        raise ValueError(f"unknown signal {unknown[0]!r} (expected one of: {', '.join(SIGNAL_TAILS)})")
    needs_centre = {"cosine", "distance", "sign_agreement"} & set(names)
    c = centre if centre is not None or not needs_centre else finite_median(updates)
    out: dict[str, Tensor] = {}
    for name in names:
        if name == "norm":
            out[name] = norm_signal(updates)
        elif name == "cosine":
            out[name] = cosine_signal(updates, c)  # type: ignore[arg-type]
        elif name == "distance":
            out[name] = distance_signal(updates, c)  # type: ignore[arg-type]
        elif name == "krum":
            out[name] = krum_signal(updates, krum_f)
        else:
            out[name] = sign_agreement(updates, c)  # type: ignore[arg-type]
    return out


def combine_scores(z: dict[str, Tensor], how: Literal["mean", "max"] = "mean") -> Tensor:
    """One suspicion score per row from oriented z-scores.

    ``mean``: the mean over signals of :math:`\\max(z, 0)`, so a signal that
    looks unusually *good* cannot cancel one that looks bad; ``max``: the
    largest oriented z. Rows with an infinite z score ``+inf`` either way.
    """
    if not z:
        raise ValueError("combine_scores: expected at least one signal, got none")
    stack = torch.stack(list(z.values()))
    if how == "max":
        return stack.max(dim=0).values
    if how == "mean":
        return stack.clamp_min(0.0).mean(dim=0)
    raise ValueError(f"combine_scores: expected how 'mean' or 'max', got {how!r}")


# ---- history across rounds ------------------------------------------------------
def blend_history(score: Tensor, past: Tensor, seen: Tensor, weight: float) -> Tensor:
    """Suspicion from this round's ``score`` and each row's ``past`` EWMA.

    .. math:: s_i = (1 - w)\\, z_i + w\\, h_i

    where :math:`h_i` is the client's history before this round, or
    :math:`z_i` itself for a client never seen (``seen`` False). With
    :math:`w = 0` the history is ignored.
    """
    if weight == 0.0:
        return score.clone()
    h = torch.where(seen, past.to(score.dtype), score)
    return (1.0 - weight) * score + weight * h


def ewma_update(past: Tensor, seen: Tensor, score: Tensor, decay: float, cap: float) -> Tensor:
    """New EWMA of each row's score, :math:`h \\leftarrow \\delta h + (1 - \\delta) \\min(s, cap)`.

    A client never seen starts at its (capped) score. The cap keeps one huge
    or infinite score from dominating the client's history for ever.
    """
    s = score.clamp_max(cap)
    return torch.where(seen, decay * past.to(score.dtype) + (1.0 - decay) * s, s)
