"""Operations on update matrices that several attacks share.

Every function here is pure: it reads ``(k, d)`` row matrices and returns new
tensors on the rows' device and dtype. Randomness comes only from the
generator passed in; draws are made on the generator's device and then moved,
so a CPU generator works with CUDA rows.

Statistics that attacks compute from the rows they can see:

- the benign reference (:func:`benign_reference`): this round's honest rows
  when the threat model shows them, else the attackers' own rows;
- per-coordinate mean and standard deviation (:func:`coordinate_mean_std`),
  the standard deviation with Bessel's correction (``k - 1``), and zero for
  fewer than two rows, so it is never NaN;
- pairwise squared Euclidean distances (:func:`pairwise_sq_distances`) with
  one matrix product, :math:`\\|a\\|^2 + \\|b\\|^2 - 2 a \\cdot b`, in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedpoison.attacks.base import AttackContext


def benign_reference(ctx: AttackContext) -> Tensor:
    """The benign-looking rows the attackers know: honest rows if visible and non-empty, else their own.

    Fang et al.'s partial-knowledge attacks use the attackers' own benign
    updates in place of the honest ones; this is that substitution.
    """
    honest = ctx.honest_updates
    if honest is not None and honest.shape[0] > 0:
        return honest
    return ctx.own_updates


def repeat_row(row: Tensor, m: int) -> Tensor:
    """``(m, d)``: ``row`` repeated ``m`` times (a new tensor, not a view)."""
    return row.reshape(1, -1).repeat(m, 1)


def joint_rows(rows: Tensor) -> Tensor:
    """Colluding rows: the mean of ``rows`` repeated once per row."""
    return repeat_row(rows.mean(dim=0), rows.shape[0])


def coordinate_mean_std(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate mean and (Bessel-corrected) standard deviation of ``(k, d)`` rows.

    The standard deviation is zero when ``k < 2``. Both are zero when ``k == 0``.
    """
    k, d = rows.shape
    if k == 0:
        zero = rows.new_zeros(d)
        return zero, zero.clone()
    mean = rows.mean(dim=0)
    std = rows.std(dim=0, correction=1) if k >= 2 else torch.zeros_like(mean)
    return mean, std


def pairwise_sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """``(ka, kb)`` float64 squared Euclidean distances between the rows of ``a`` and ``b``.

    .. math:: D_{ij} = \\|a_i\\|^2 + \\|b_j\\|^2 - 2 a_i \\cdot b_j

    clamped at zero (rounding can make it slightly negative).
    """
    a64, b64 = a.double(), b.double()
    sq = (a64 * a64).sum(dim=1)[:, None] + (b64 * b64).sum(dim=1)[None, :] - 2.0 * (a64 @ b64.T)
    return sq.clamp_min(0.0)


def row_norms(rows: Tensor) -> Tensor:
    """``(k,)`` L2 norm of each row."""
    norms: Tensor = torch.linalg.vector_norm(rows, dim=1)
    return norms


def gaussian_like(shape: tuple[int, ...], *, std: float, generator: torch.Generator, like: Tensor) -> Tensor:
    """``N(0, std^2)`` draws of ``shape``, on ``like``'s device and dtype."""
    draw = torch.randn(shape, generator=generator, device=generator.device)
    return (draw * std).to(device=like.device, dtype=like.dtype)


def uniform_like(shape: tuple[int, ...], *, generator: torch.Generator, like: Tensor) -> Tensor:
    """``U[0, 1)`` draws of ``shape``, on ``like``'s device and dtype."""
    draw = torch.rand(shape, generator=generator, device=generator.device)
    return draw.to(device=like.device, dtype=like.dtype)


def random_subset(n: int, k: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
    """``(k,)`` int64 indices of ``k`` distinct items of ``range(n)``, drawn uniformly."""
    return torch.randperm(n, generator=generator, device=generator.device)[:k].to(device)
