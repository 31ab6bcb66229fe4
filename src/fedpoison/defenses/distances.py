"""Norms, pairwise distances and cosine similarities over the update matrix.

Every pairwise quantity comes from one Gram matrix product ``X @ X.T`` (the
``|a|^2 + |b|^2 - 2 a.b`` identity), never from a Python loop over pairs.
Rows so large that their squared norm overflows float32 (an attacker sending
``1e30``) are handled explicitly: their distances are ``+inf`` and their
norms and cosines are recomputed from rescaled copies of those rows only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def row_norms(x: Tensor) -> Tensor:
    """``(n,)`` L2 norm of each row, exact for finite rows whose squared norm overflows.

    .. math:: \\|x_i\\|_2 = \\max_j |x_{ij}| \\cdot \\| x_i / \\max_j |x_{ij}| \\|_2

    The rescaled form is used only for the rows whose plain norm is not finite.
    """
    norms = torch.linalg.vector_norm(x, dim=1)
    bad = ~torch.isfinite(norms)
    if bool(bad.any()):
        rows = x[bad]
        scale = rows.abs().amax(dim=1, keepdim=True)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        norms = norms.clone()
        norms[bad] = (torch.linalg.vector_norm(rows / safe, dim=1) * safe.squeeze(1)).to(norms.dtype)
    return norms


def gram(x: Tensor) -> Tensor:
    """``(n, n)`` Gram matrix ``X X^T``: the one matrix product pairwise rules need.

    Symmetrised exactly (BLAS may round ``G_ij`` and ``G_ji`` differently), so
    ties between rows are ties in every derived quantity.
    """
    g = x @ x.T
    return torch.maximum(g, g.T) * 0.5 + torch.minimum(g, g.T) * 0.5


def sq_distances_from_gram(g: Tensor) -> Tensor:
    """``(n, n)`` squared L2 distances from a Gram matrix.

    .. math:: D_{ij} = G_{ii} + G_{jj} - 2 G_{ij}

    Entries that are NaN or overflow (rows with huge values) become ``+inf``;
    rounding negatives are clamped to 0 and the diagonal is exactly 0.
    """
    sq = torch.diagonal(g)
    d = sq[:, None] + sq[None, :] - 2.0 * g
    d = torch.nan_to_num(d, nan=float("inf"), posinf=float("inf"), neginf=float("inf")).clamp_min(0.0)
    d.fill_diagonal_(0.0)
    return d


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """``(n, n)`` squared L2 distances between rows, from one Gram product."""
    return sq_distances_from_gram(gram(x))


def cosine_similarity_matrix(x: Tensor) -> Tensor:
    """``(n, n)`` cosine similarities between rows, from one Gram product.

    A zero row has cosine 0 with everything (itself included). Rows whose
    Gram entries overflow are rescaled by their largest magnitude first (a
    copy of the matrix is made only in that case).
    """
    g = gram(x)
    sq = torch.diagonal(g)
    if not bool(torch.isfinite(g).all()):
        scale = x.abs().amax(dim=1, keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        g = gram(x / scale)
        sq = torch.diagonal(g)
    norms = sq.clamp_min(0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, g / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    return cos.clamp(-1.0, 1.0)


def cosine_to(x: Tensor, ref: Tensor) -> Tensor:
    """``(n,)`` cosine similarity of each row with the vector ``ref`` (0 for zero vectors)."""
    xn = row_norms(x)
    rn = row_norms(ref[None, :])[0]
    scale_x = torch.where(xn > 0, xn, torch.ones_like(xn))
    scale_r = rn if bool(rn > 0) else torch.ones_like(rn)
    # Normalise the reference first so huge rows cannot overflow the dot product.
    dots = (x @ (ref / scale_r)) / scale_x
    if not bool(torch.isfinite(dots).all()):
        amax = x.abs().amax(dim=1)
        amax = torch.where(amax > 0, amax, torch.ones_like(amax))
        dots = ((x / amax[:, None]) @ (ref / scale_r)) / (scale_x / amax)
    cos = torch.where((xn > 0) & (rn > 0), dots, torch.zeros_like(dots))
    return cos.clamp(-1.0, 1.0)


def distances_to(x: Tensor, z: Tensor, *, sq_norms: Tensor | None = None) -> Tensor:
    r"""``(n,)`` L2 distance of each row of ``x`` to the point ``z``.

    .. math:: \|x_i - z\|^2 = \|x_i\|^2 - 2 x_i \cdot z + \|z\|^2

    One matrix-vector product (pass ``sq_norms = row_norms(x) ** 2`` to reuse
    the norms across calls). Where that identity cancels (the distance is under
    a tenth of the norms, so float32 rounding of the dot product would show) or
    overflows, those rows are recomputed from explicit differences, a block of
    columns at a time, so no ``(n, d)`` temporary is allocated.
    """
    sq = row_norms(x).square() if sq_norms is None else sq_norms
    zz = torch.dot(z, z)
    if not bool(zz > 0):
        return sq.sqrt()
    d2 = sq - 2.0 * (x @ z) + zz
    risky = ~torch.isfinite(d2) | (d2 <= 1e-2 * (sq + zz))
    if bool(risky.any()):
        d2 = d2.clone()
        if int(risky.sum()) * 2 > x.shape[0]:
            exact = exact_distances_to(x, z)
            d2 = torch.where(risky, exact.square(), d2)
        else:
            d2[risky] = exact_distances_to(x[risky], z).square()
    return d2.clamp_min(0.0).sqrt()


def exact_distances_to(x: Tensor, z: Tensor, *, chunk: int | None = None) -> Tensor:
    """``(n,)`` distances from explicit differences ``x_i - z``, a block of columns at a time."""
    n, d = x.shape
    if chunk is None:  # about 2 MiB of float32 per block: the difference stays in cache
        chunk = max(1024, (1 << 19) // max(n, 1))
    acc = torch.zeros(n, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
    for start in range(0, d, chunk):
        diff = x[:, start : start + chunk] - z[start : start + chunk]
        acc += torch.linalg.vector_norm(diff, dim=1).square()
    out = acc.sqrt()
    if not bool(torch.isfinite(out).all()):
        bad = ~torch.isfinite(out)
        out = out.clone()
        out[bad] = row_norms(x[bad] - z)
    return out


def clip_factors(norms: Tensor, bound: Tensor | float) -> Tensor:
    """``min(1, bound / norm)`` per row; rows with zero norm keep factor 1."""
    b = torch.as_tensor(bound, dtype=norms.dtype, device=norms.device)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > b, b / safe, torch.ones_like(norms))
