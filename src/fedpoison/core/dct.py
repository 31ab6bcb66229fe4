"""The discrete cosine transform (DCT-II, orthonormal) in torch, through one FFT per axis.

FreqFed (Fereidooni et al., NDSS 2024) compares model updates by their
low-frequency DCT coefficients. torch has no DCT, so it is computed here by
Makhoul's reordering (J. Makhoul 1980, 'A fast cosine transform in one and two
dimensions'): for :math:`x` of length :math:`N`, reorder
:math:`v = (x_0, x_2, \\ldots, x_3, x_1)`, then

.. math:: y_k = 2\\,\\mathrm{Re}\\left(e^{-i\\pi k / (2N)} \\, \\mathrm{FFT}(v)_k\\right)
          = 2 \\sum_{n=0}^{N-1} x_n \\cos\\frac{\\pi k (2n + 1)}{2N},

scaled by :math:`\\sqrt{1/(4N)}` for :math:`k = 0` and :math:`\\sqrt{1/(2N)}`
otherwise: ``scipy.fft.dct(x, type=2, norm="ortho")``, which the tests check.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dct_ii(x: Tensor, *, keep: int | None = None) -> Tensor:
    """Orthonormal DCT-II along the last axis; only the first ``keep`` coefficients if given.

    Example
    -------
    >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    >>> [round(v, 4) for v in dct_ii(x).tolist()]
    [5.0, -2.2304, 0.0, -0.1585]
    """
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.fft(v, dim=-1)
    k = keep if keep is not None else n
    spec = spec[..., :k]
    real_dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    angle = -math.pi * torch.arange(k, dtype=real_dtype, device=x.device) / (2 * n)
    y = 2.0 * (spec.real * torch.cos(angle) - spec.imag * torch.sin(angle))
    scale = torch.full((k,), math.sqrt(1.0 / (2 * n)), dtype=y.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / (4 * n))
    return y * scale


def dct2_ii(x: Tensor, *, keep: int | None = None) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (``scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")``).

    With ``keep``, only the top-left ``keep x keep`` block of coefficients
    (the lowest frequencies) is computed and returned.
    """
    rows = dct_ii(x, keep=keep)  # along the last axis
    return dct_ii(rows.transpose(-1, -2), keep=keep).transpose(-1, -2)
