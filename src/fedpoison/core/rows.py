"""Norms, distances, cosines and Krum scores over the update matrix.

One definition of each, shared by the aggregation rules, the auditors and the
attacks, so that an attacker who computes Krum computes the server's Krum.
Every function is pure (it never writes into its input) and vectorised: every
pairwise quantity comes from one matrix product ``X @ X.T`` (the
:math:`\\|a\\|^2 + \\|b\\|^2 - 2 a \\cdot b` identity), never from a Python
loop over pairs. Results keep the input's dtype and device; a caller that
wants float64 precision passes float64 rows.

Rows so large that their squared norm overflows (an attacker sending
``1e30``) are handled explicitly: their distances are ``+inf``, and their
norms and cosines are recomputed from rescaled copies of those rows only.
Rows holding NaN or Inf are the caller's to mask (:func:`finite_rows`); the
server drops them before any rule runs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def finite_rows(x: Tensor) -> Tensor:
    """``(n,)`` bool: rows whose every entry is finite.

    A row with a NaN or an infinity has a non-finite sum, so only the rows whose
    sum is not finite are checked entry by entry (a sum can also overflow on
    finite values, hence the second check). One reduction instead of an
    ``(n, d)`` boolean mask: 3-4x faster on a round's matrix.

    Example
    -------
    >>> finite_rows(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3e38, 3e38]])).tolist()
    [True, False, True]
    """
    ok = torch.isfinite(x.sum(dim=1))
    if not bool(ok.all()):
        bad = ~ok
        ok = ok.clone()
        ok[bad] = torch.isfinite(x[bad]).all(dim=1)
    return ok


def row_norms(x: Tensor) -> Tensor:
    """``(n,)`` L2 norm of each row, exact for finite rows whose squared norm overflows.

    .. math:: \\|x_i\\|_2 = \\max_j |x_{ij}| \\cdot \\| x_i / \\max_j |x_{ij}| \\|_2

    The rescaled form is used only for the rows whose plain norm is not
    finite. A row holding NaN or Inf has a NaN or Inf norm.

    Example
    -------
    >>> row_norms(torch.tensor([[3.0, 4.0], [0.0, 0.0], [3e30, 4e30]]))
    tensor([5.0000e+00, 0.0000e+00, 5.0000e+30])
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
    """``(n, n)`` Gram matrix ``X X^T``: the one matrix product pairwise quantities need.

    Symmetrised exactly (BLAS may round ``G_ij`` and ``G_ji`` differently), so
    ties between rows are ties in every derived quantity.
    """
    g = x @ x.T
    return torch.maximum(g, g.T) * 0.5 + torch.minimum(g, g.T) * 0.5


def _sq_from_dots(sq_a: Tensor, sq_b: Tensor, dots: Tensor) -> Tensor:
    # |a|^2 + |b|^2 - 2 a.b; NaN or overflow -> +inf; rounding negatives -> 0.
    d = sq_a[:, None] + sq_b[None, :] - 2.0 * dots
    return torch.nan_to_num(d, nan=float("inf"), posinf=float("inf"), neginf=float("inf")).clamp_min(0.0)


def sq_distances_from_gram(g: Tensor) -> Tensor:
    """``(n, n)`` squared L2 distances from a Gram matrix.

    .. math:: D_{ij} = G_{ii} + G_{jj} - 2 G_{ij}

    Entries that are NaN or overflow (rows with huge values) become ``+inf``;
    rounding negatives are clamped to 0 and the diagonal is exactly 0.
    """
    sq = torch.diagonal(g)
    d = _sq_from_dots(sq, sq, g)
    d.fill_diagonal_(0.0)
    return d


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """``(n, n)`` squared L2 distances between the rows of ``x``, from one Gram product.

    Example
    -------
    >>> pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]))
    tensor([[ 0., 25.,  1.],
            [25.,  0., 18.],
            [ 1., 18.,  0.]])
    """
    return sq_distances_from_gram(gram(x))


def cross_sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """``(ka, kb)`` squared L2 distances between the rows of ``a`` and the rows of ``b``.

    .. math:: D_{ij} = \\|a_i\\|^2 + \\|b_j\\|^2 - 2\\, a_i \\cdot b_j

    The same identity as :func:`pairwise_sq_distances`, for two sets of rows
    (a candidate row against the benign ones); NaN or overflow is ``+inf``,
    rounding negatives are 0. No zero diagonal is imposed.

    Example
    -------
    >>> cross_sq_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    tensor([[25.,  1.]])
    """
    return _sq_from_dots((a * a).sum(dim=1), (b * b).sum(dim=1), a @ b.T)


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
    """``(n,)`` cosine similarity of each row with the vector ``ref`` (0 for zero vectors).

    .. math:: \\cos(x_i, r) = \\frac{x_i \\cdot r}{\\|x_i\\| \\|r\\|}

    The reference is normalised first, so huge rows cannot overflow the dot
    product.

    Example
    -------
    >>> cosine_to(torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]]), torch.tensor([1.0, 0.0]))
    tensor([ 0.6000,  0.0000, -1.0000])
    """
    xn = row_norms(x)
    rn = row_norms(ref[None, :])[0]
    scale_x = torch.where(xn > 0, xn, torch.ones_like(xn))
    scale_r = rn if bool(rn > 0) else torch.ones_like(rn)
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

    Example
    -------
    >>> distances_to(torch.tensor([[3.0, 4.0], [1.0, 1.0]]), torch.tensor([0.0, 1.0]))
    tensor([4.2426, 1.0000])
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
    """``min(1, bound / norm)`` per row; rows with zero norm keep factor 1.

    Example
    -------
    >>> clip_factors(torch.tensor([0.0, 1.0, 4.0]), 2.0)
    tensor([1.0000, 1.0000, 0.5000])
    """
    b = torch.as_tensor(bound, dtype=norms.dtype, device=norms.device)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > b, b / safe, torch.ones_like(norms))


def norm_quantile(norms: Tensor, q: float) -> Tensor:
    """The ``q``-quantile of ``norms`` (linear interpolation, computed in float64), in ``norms``' dtype.

    ``q = 0.5`` is the median (the mean of the two middle values for an even count):
    the clipping bound of FLAME, SignGuard and quantile clipping.

    Example
    -------
    >>> norm_quantile(torch.tensor([1.0, 4.0, 2.0, 10.0]), 0.5)
    tensor(3.)
    """
    return torch.quantile(norms.to(torch.float64), q).to(norms.dtype)


# ---- Krum ---------------------------------------------------------------------------
def krum_neighbours(n: int, f: int) -> int:
    """How many nearest rows a Krum score sums over ``n`` rows with ``f`` Byzantine ones.

    Blanchard et al. 2017's ``n - f - 2``, clamped to ``[1, n - 1]`` so that
    every ``n >= 2`` rows have a score (0 for ``n <= 1``). Under Krum's own
    requirement ``n >= 2f + 3`` the clamp never acts; it gives a defined score
    where the count would not be positive (an auditor assuming too large an
    ``f``, Bulyan's last picks, an attacker's check over few rows).

    Example
    -------
    >>> [krum_neighbours(n, 1) for n in (1, 2, 3, 5, 7)]
    [0, 1, 1, 2, 4]
    """
    if f < 0:
        raise ValueError(f"krum: expected f >= 0, got f={f}")
    if n <= 1:
        return 0
    return min(max(n - f - 2, 1), n - 1)


def krum_scores(sq_dist: Tensor, f: int, *, valid: Tensor | None = None, neighbours: int | None = None) -> Tensor:
    """``(n,)`` Krum scores from an ``(n, n)`` squared-distance matrix with zero diagonal.

    .. math:: s(i) = \\sum_{i \\to j} \\|x_i - x_j\\|^2

    where :math:`i \\to j` ranges over the :func:`krum_neighbours` nearest
    other rows of :math:`x_i` (Blanchard et al. 2017, Krum: ``n - f - 2``).
    ``valid`` (``(n,)`` bool) restricts the rows taking part: the others are
    nobody's neighbour, do not count in ``n``, and score ``+inf``. Overflowed
    distances are ``+inf``, so such rows score ``+inf``. ``neighbours``
    replaces ``n - f - 2`` (clamped the same way): an attacker simulating the
    server's Krum on fewer rows than the server sees (Fang et al.'s partial
    knowledge).

    Every Krum in fedpoison (the ``krum``/``multi_krum``/``bulyan`` rules, the
    auditors' ``krum`` signal, Fang et al.'s attack on Krum) calls this one.

    Example
    -------
    >>> krum_scores(pairwise_sq_distances(torch.tensor([[0.0], [1.0], [10.0]])), f=0)  # 1 neighbour
    tensor([ 1.,  1., 81.])
    """
    n = sq_dist.shape[0]
    d = sq_dist
    if valid is not None:
        d = sq_dist.masked_fill(~valid[None, :], float("inf"))
    m = n if valid is None else int(valid.sum())
    k = krum_neighbours(m, f) if neighbours is None else (min(max(neighbours, 1), m - 1) if m > 1 else 0)
    if k == 0:
        scores = torch.zeros(n, dtype=sq_dist.dtype, device=sq_dist.device)
    else:
        # The diagonal (0) is always among the k+1 smallest of a valid row; drop it by sorting.
        scores = torch.topk(d, min(k + 1, n), dim=1, largest=False, sorted=True).values[:, 1:].sum(dim=1)
    if valid is not None:
        scores = scores.masked_fill(~valid, float("inf"))
    return scores


# ---- per-coordinate moments -----------------------------------------------------------
def coordinate_mean_std(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate mean and (Bessel-corrected) standard deviation of ``(k, d)`` rows.

    The standard deviation is zero when ``k < 2``. Both are zero when ``k == 0``.

    Example
    -------
    >>> coordinate_mean_std(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    (tensor([2., 0.]), tensor([1.4142, 0.0000]))
    """
    k, d = rows.shape
    if k == 0:
        zero = rows.new_zeros(d)
        return zero, zero.clone()
    mean = rows.mean(dim=0)
    std = rows.std(dim=0, correction=1) if k >= 2 else torch.zeros_like(mean)
    return mean, std


# ---- magnitude masks and median-centred z-scores ----------------------------------------
def top_k_mask(values: Tensor, k: int, *, absolute: bool = False, always: Tensor | None = None,
               block_rows: int = 16) -> Tensor:
    """``(n, m)`` bool: per row, the entries at least as large as the row's ``k``-th largest (``0 <= k <= m``).

    ``absolute`` ranks ``|values|``. ``always`` (``(m,)`` bool) marks columns
    that are always in the mask and not counted in ``k`` (``k`` then ranges
    over the other columns). One selection per row (``torch.kthvalue``), no
    sort and no ``(n, k)`` index tensor, computed ``block_rows`` rows at a time:
    besides the ``(n, m)`` boolean result, only a block's copy is held. Entries
    tied with the ``k``-th largest are all kept, so a row with ties keeps a few
    more than ``k``; with distinct values exactly ``k``.

    Example
    -------
    >>> top_k_mask(torch.tensor([[3.0, 1.0, 2.0]]), 2).tolist()
    [[True, False, True]]
    >>> top_k_mask(torch.tensor([[3.0, -1.0, 2.0]]), 1, absolute=True, always=torch.tensor([False, True, False])).tolist()
    [[True, True, False]]
    """
    n, m = values.shape
    fixed = 0 if always is None else int(always.sum())
    if not 0 <= k <= m - fixed:
        raise ValueError(f"k: expected 0..{m - fixed}, got {k}")
    out = torch.empty((n, m), dtype=torch.bool, device=values.device)
    for start in range(0, n, block_rows):
        v = values[start:start + block_rows]
        v = v.abs() if absolute else v.clone()
        if always is not None:
            v[:, always] = float("inf")
        if k + fixed == m:
            out[start:start + block_rows] = True
        elif k + fixed == 0:
            out[start:start + block_rows] = False
        else:
            thr = torch.kthvalue(v, m - (k + fixed) + 1, dim=1).values
            out[start:start + block_rows] = v >= thr[:, None]
    return out


def top_magnitude_mask(x: Tensor, k: int) -> Tensor:
    """``(n, d)`` bool: per row, the ``k`` coordinates of largest magnitude (:func:`top_k_mask` of ``|x|``).

    Example
    -------
    >>> top_magnitude_mask(torch.tensor([[3.0, -1.0, 2.0], [0.0, -5.0, 4.0]]), 1).tolist()
    [[True, False, False], [False, True, False]]
    """
    return top_k_mask(x, k, absolute=True)


def median_std_scores(v: Tensor) -> Tensor:
    """``(n,)`` median-centred z-scores :math:`|v_i - \\mathrm{med}(v)| / \\sigma(v)`.

    :math:`\\sigma` is the population standard deviation of the finite values
    (the "MZ-score" of AlignIns and LASA, Xu et al. 2025). When it is zero (or
    fewer than two values are finite) every finite value scores 0; a
    non-finite value scores ``+inf``. Computed in float64.

    Example
    -------
    >>> median_std_scores(torch.tensor([1.0, 2.0, 3.0, 10.0])).round(decimals=4)
    tensor([0.4243, 0.1414, 0.1414, 2.1213])
    """
    x = v.to(torch.float64)
    ok = torch.isfinite(x)
    out = torch.full_like(x, float("inf"))
    good = x[ok]
    if good.numel() < 2:
        out[ok] = 0.0
        return out.to(v.dtype)
    med = torch.quantile(good, 0.5)
    std = good.std(correction=0)
    out[ok] = (good - med).abs() / std if bool(std > 1e-12) else torch.zeros_like(good)
    return out.to(v.dtype)


# ---- masks and projections (constrained attacks) --------------------------------------
def bottom_k_mask(values: Tensor, top_fraction: float) -> Tensor:
    """Bool mask of the coordinates *outside* the ``top_fraction`` largest ``|values|``.

    The top :math:`\\lceil q\\,d \\rceil` coordinates by magnitude are ``False``
    (ties broken by :func:`torch.topk`), every other one ``True``: Neurotoxin's
    mask, which keeps the coordinates the benign updates change least.

    Example
    -------
    >>> bottom_k_mask(torch.tensor([0.1, -5.0, 0.0, 2.0]), 0.5).tolist()
    [True, False, True, False]
    """
    if not 0.0 <= top_fraction <= 1.0:
        raise ValueError(f"bottom_k_mask: expected top_fraction in [0, 1], got {top_fraction}")
    flat = values.reshape(-1)
    k = math.ceil(top_fraction * flat.numel())
    mask = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k:
        mask[torch.topk(flat.abs(), k, sorted=False).indices] = False
    return mask.reshape(values.shape)


def project_to_ball(x: Tensor, center: Tensor, radius: float) -> Tensor:
    """The L2 projection of the vector ``x`` onto the ball of ``radius`` around ``center``.

    .. math:: \\Pi(x) = c + (x - c)\\,\\min\\left(1, \\frac{r}{\\|x - c\\|_2}\\right)

    Example
    -------
    >>> project_to_ball(torch.tensor([3.0, 4.0]), torch.zeros(2), 1.0)
    tensor([0.6000, 0.8000])
    """
    diff = x - center
    factor = clip_factors(torch.linalg.vector_norm(diff).reshape(1), radius)[0]
    return center + diff * factor
