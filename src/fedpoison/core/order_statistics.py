"""Coordinate-wise order statistics along the client axis, fast on CPU.

The update matrix is ``(n, d)`` row-major: the ``n`` values of one coordinate
are ``d`` elements apart, which makes ``torch.median(x, dim=0)``,
``torch.quantile`` and ``torch.sort(x, dim=0)`` gather strided memory for every
coordinate (ByzFL's median and trimmed mean do exactly this). Here the matrix
is processed a block of columns at a time: each block is transposed into a
small contiguous ``(c, n)`` array that stays in cache and its rows are sorted
by numpy, whose float sort is vectorised (AVX-512/AVX2 sorting networks in
numpy >= 2). Measured on (200, 400k) float32, sorting such rows took 0.45 s,
a multi-``kth`` ``partition`` 1.3 s and ``torch.kthvalue`` on the same blocks
1.8 s. Blocks run on ``torch.get_num_threads()`` threads (numpy's sort
releases the GIL). On other devices the plain ``torch.sort`` along the client
axis is used: GPUs do not need the layout trick.

Every function here is pure: it never writes into its input.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

BlockKernel = Callable[[np.ndarray], np.ndarray]


def _block_columns(n: int) -> int:
    # About 1 MiB of float32 per transposed block: fits the L2 cache with room.
    return max(256, (1 << 18) // max(n, 1))


def map_column_blocks(x: Tensor, kernel: BlockKernel) -> Tensor:
    """Apply ``kernel`` to contiguous ``(c, n)`` blocks of ``x.T``; concatenate its ``(c,)`` outputs.

    ``x`` must be a CPU tensor. The kernel receives a fresh contiguous array it
    may modify in place.
    """
    n, d = x.shape
    arr = x.detach().numpy()
    out = np.empty(d, dtype=arr.dtype)
    c = _block_columns(n)

    def run(start: int) -> None:
        # Always a copy: for a single column or a transposed input the slice is already
        # contiguous, and ascontiguousarray would hand the kernel a view of the caller's tensor.
        block = np.array(arr[:, start : start + c].T, order="C", copy=True)
        out[start : start + c] = kernel(block)

    starts = range(0, d, c)
    workers = max(1, min(torch.get_num_threads(), len(starts)))
    if workers == 1:
        for s in starts:
            run(s)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    return torch.from_numpy(out)


ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


def _half_sum(a: ArrayT, b: ArrayT) -> ArrayT:
    # (a + b) / 2 without overflow for values near the float32 limit.
    return a * 0.5 + b * 0.5


def coordinate_median(x: Tensor) -> Tensor:
    r"""``(d,)`` coordinate-wise median of the rows (mean of the two middle values for even n).

    .. math:: \mathrm{med}(x)_j = \mathrm{median}\{x_{1j}, \dots, x_{nj}\}
    """
    n = x.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    if x.device.type != "cpu":
        return median_by_sort(x)

    def kernel(block: np.ndarray) -> np.ndarray:
        block.sort(axis=1)
        return block[:, lo] if lo == hi else _half_sum(block[:, lo], block[:, hi])

    return map_column_blocks(x, kernel).to(x.dtype)


def coordinate_trimmed_mean(x: Tensor, b: int) -> Tensor:
    r"""``(d,)`` mean of the middle ``n - 2b`` values of each coordinate.

    .. math:: \mathrm{trmean}_b(x)_j = \frac{1}{n - 2b} \sum_{k=b+1}^{n-b} x_{(k)j}

    where :math:`x_{(k)j}` is the k-th smallest value of coordinate j. The kept
    values are averaged directly (never "sum minus extremes", which loses every
    honest digit when an attacker sends 1e30).
    """
    n = x.shape[0]
    if not 0 <= 2 * b < n:
        raise ValueError(f"trimmed mean needs 0 <= 2b < n, got b={b}, n={n}")
    if b == 0:
        return x.mean(dim=0)
    if x.device.type != "cpu":
        return trimmed_mean_by_sort(x, b)

    def kernel(block: np.ndarray) -> np.ndarray:
        block.sort(axis=1)
        return block[:, b : n - b].mean(axis=1, dtype=np.float64).astype(block.dtype)

    return map_column_blocks(x, kernel).to(x.dtype)


def closest_window_start(s: np.ndarray, med: np.ndarray, beta: int) -> np.ndarray:
    """Start of the ``beta`` consecutive sorted values closest to ``med``, per row of ``s``.

    ``s`` is ``(c, n)`` sorted along its rows. The ``beta`` values closest to
    the median are a window of consecutive sorted values; among the ``n - beta + 1``
    windows it is the one whose farthest end is nearest to the median (ties:
    the leftmost window, which depends only on the values).
    """
    n = s.shape[1]
    cost = np.maximum(med[:, None] - s[:, : n - beta + 1], s[:, beta - 1 :] - med[:, None])
    return cost.argmin(axis=1)


def closest_window_start_torch(s: Tensor, med: Tensor, beta: int) -> Tensor:
    """:func:`closest_window_start` on tensors."""
    n = s.shape[1]
    cost = torch.maximum(med[:, None] - s[:, : n - beta + 1], s[:, beta - 1 :] - med[:, None])
    return cost.argmin(dim=1)


def coordinate_closest_to_median_mean(x: Tensor, beta: int) -> Tensor:
    r"""``(d,)`` per coordinate, the mean of the ``beta`` values closest to the median.

    This is Bulyan's coordinate-wise step (El Mhamdi et al. 2018):

    .. math:: \mathrm{out}_j = \frac{1}{\beta} \sum_{k \in N_j} x_{kj},\quad
        N_j = \arg\min_{|N| = \beta} \max_{k \in N} |x_{kj} - \mathrm{med}(x)_j|

    computed from one sort per coordinate: the closest values form a window of
    consecutive sorted values.
    """
    n = x.shape[0]
    if not 1 <= beta <= n:
        raise ValueError(f"closest-to-median mean needs 1 <= beta <= n, got beta={beta}, n={n}")
    if x.device.type != "cpu":
        return closest_to_median_mean_by_sort(x, beta)
    lo, hi = (n - 1) // 2, n // 2
    offsets = np.arange(beta)

    def kernel(block: np.ndarray) -> np.ndarray:
        block.sort(axis=1)
        med = block[:, lo] if lo == hi else _half_sum(block[:, lo], block[:, hi])
        start = closest_window_start(block, med, beta)
        window = np.take_along_axis(block, start[:, None] + offsets, axis=1)
        return window.mean(axis=1, dtype=np.float64).astype(block.dtype)

    return map_column_blocks(x, kernel).to(x.dtype)


# ---- the same maths with torch.sort along the client axis (GPUs; tested on CPU too) ----------
def median_by_sort(x: Tensor) -> Tensor:
    """:func:`coordinate_median` with one ``torch.sort`` along the client axis."""
    n = x.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    s = torch.sort(x, dim=0).values
    return s[lo] if lo == hi else _half_sum(s[lo], s[hi])


def trimmed_mean_by_sort(x: Tensor, b: int) -> Tensor:
    """:func:`coordinate_trimmed_mean` with one ``torch.sort`` along the client axis."""
    n = x.shape[0]
    return torch.sort(x, dim=0).values[b : n - b].to(torch.float64).mean(dim=0).to(x.dtype)


def closest_to_median_mean_by_sort(x: Tensor, beta: int) -> Tensor:
    """:func:`coordinate_closest_to_median_mean` with one ``torch.sort`` along the client axis."""
    n = x.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    s = torch.sort(x, dim=0).values.T
    med = s[:, lo] if lo == hi else _half_sum(s[:, lo], s[:, hi])
    start = closest_window_start_torch(s, med, beta)
    idx = start[:, None] + torch.arange(beta, device=x.device)
    return torch.gather(s, 1, idx).to(torch.float64).mean(dim=1).to(x.dtype)
