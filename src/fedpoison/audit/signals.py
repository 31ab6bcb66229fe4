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
round's rows (:func:`coordinate_median`) or the previous round's aggregate.

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


def finite_rows(updates: Tensor) -> Tensor:
    """``(n,)`` bool: rows whose every coordinate is finite."""
    return torch.isfinite(updates).all(dim=1)


def row_norms(updates: Tensor) -> Tensor:
    """``(n,)`` L2 norm of each row (NaN for a non-finite row)."""
    norms = torch.linalg.vector_norm(updates, dim=1)
    return norms.masked_fill(~finite_rows(updates), float("nan"))


def coordinate_median(updates: Tensor) -> Tensor:
    """``(d,)`` coordinate-wise median of the finite rows (mean of the two middle values for even n).

    Zeros when no row is finite.

    Example
    -------
    >>> coordinate_median(torch.tensor([[0.0, 1.0], [2.0, 5.0], [4.0, 3.0], [100.0, -1.0]]))
    tensor([3., 2.])
    """
    rows = updates[finite_rows(updates)]
    k = rows.shape[0]
    if k == 0:
        return updates.new_zeros(updates.shape[1])
    s = rows.sort(dim=0).values
    return (s[(k - 1) // 2] + s[k // 2]) / 2


def cosine_to(updates: Tensor, centre: Tensor, eps: float = 1e-12) -> Tensor:
    """``(n,)`` cosine similarity of each row to ``centre`` (0 for a zero row or zero centre)."""
    num = updates @ centre
    den = torch.linalg.vector_norm(updates, dim=1) * torch.linalg.vector_norm(centre)
    out = num / den.clamp_min(eps)
    return out.masked_fill(~finite_rows(updates), float("nan"))


def distance_to(updates: Tensor, centre: Tensor) -> Tensor:
    """``(n,)`` Euclidean distance of each row to ``centre``."""
    out = torch.linalg.vector_norm(updates - centre, dim=1)
    return out.masked_fill(~finite_rows(updates), float("nan"))


def pairwise_sq_distances(updates: Tensor) -> Tensor:
    """``(n, n)`` squared Euclidean distances, in float64, with one matrix product.

    .. math:: D_{ij} = \\|u_i\\|^2 + \\|u_j\\|^2 - 2\\, u_i \\cdot u_j

    clamped at zero against rounding, with an exact zero diagonal.
    """
    x = updates.to(torch.float64)
    sq = (x * x).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    d.fill_diagonal_(0.0)
    return d


def default_krum_f(n: int) -> int:
    """The largest f Krum tolerates for n rows, :math:`\\lfloor (n - 3) / 2 \\rfloor` (at least 0).

    An auditor does not know how many attackers there are; assuming the most
    Krum can tolerate makes the score look at the closest half of the rows.
    """
    return max((n - 3) // 2, 0)


def krum_scores(updates: Tensor, f: int | None = None) -> Tensor:
    """``(n,)`` Krum score of each row (Blanchard et al. 2017).

    .. math:: s(i) = \\sum_{j \\in N_i} \\|u_i - u_j\\|^2

    with :math:`N_i` the :math:`k = n - f - 2` rows closest to :math:`u_i`
    (itself excluded); :math:`k` is clamped to ``[1, n - 1]`` so the score is
    defined for every ``n >= 2`` (and zero for ``n == 1``). ``f`` defaults to
    :func:`default_krum_f`. Non-finite rows score NaN and are never anyone's
    neighbour.

    Example
    -------
    >>> krum_scores(torch.tensor([[0.0], [1.0], [10.0]]), f=0)   # k = 1 neighbour
    tensor([ 1.,  1., 81.])
    """
    n = updates.shape[0]
    if n <= 1:
        return updates.new_zeros(n)
    f = default_krum_f(n) if f is None else f
    if f < 0:
        raise ValueError(f"krum_scores: expected f >= 0, got f={f}")
    k = min(max(n - f - 2, 1), n - 1)
    ok = finite_rows(updates)
    x = torch.where(ok[:, None], updates, torch.zeros((), dtype=updates.dtype, device=updates.device))
    d = pairwise_sq_distances(x)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    d = d.masked_fill(torch.eye(n, dtype=torch.bool, device=d.device), inf)
    d = d.masked_fill(~ok[None, :], inf)
    k = min(k, max(int(ok.sum()) - 1, 1))
    nearest = d.topk(k, dim=1, largest=False).values
    out = nearest.sum(dim=1).to(updates.dtype)
    return out.masked_fill(~ok | ~torch.isfinite(out), float("nan"))


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
    med = _median(x)
    dev = (x - med).abs()
    scale = MAD_SCALE * _median(dev)
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

    ``centre`` defaults to :func:`coordinate_median` of ``updates`` (computed
    only when a signal needs it). Unknown names raise ``ValueError`` naming
    the known ones.
    """
    names = list(names)
    unknown = [s for s in names if s not in SIGNAL_TAILS]
    if unknown:
        raise ValueError(f"unknown signal {unknown[0]!r} (expected one of: {', '.join(SIGNAL_TAILS)})")
    needs_centre = {"cosine", "distance", "sign_agreement"} & set(names)
    c = centre if centre is not None or not needs_centre else coordinate_median(updates)
    out: dict[str, Tensor] = {}
    for name in names:
        if name == "norm":
            out[name] = row_norms(updates)
        elif name == "cosine":
            out[name] = cosine_to(updates, c)  # type: ignore[arg-type]
        elif name == "distance":
            out[name] = distance_to(updates, c)  # type: ignore[arg-type]
        elif name == "krum":
            out[name] = krum_scores(updates, krum_f)
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


def _median(x: Tensor) -> Tensor:
    s = x.sort().values
    k = s.shape[0]
    return (s[(k - 1) // 2] + s[k // 2]) / 2


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
