"""Datasets that need no files: scikit-learn's digits and seeded synthetic Gaussians."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fedpoison.data.base import DATASETS, Dataset

if TYPE_CHECKING:
    from fedpoison.config import DatasetConfig


@DATASETS.register(
    "digits",
    description="scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); no download.",
    reference="Alpaydin & Kaynak 1998, UCI Optical Recognition of Handwritten Digits (test split).",
    input_shape="1x8x8",
)
def load_digits(cfg: DatasetConfig, seed: int = 0) -> Dataset:
    """Load the digits as ``(N, 1, 8, 8)`` images in ``[0, 1]``.

    The test split is stratified and fixed: it depends on ``cfg.test_fraction``
    and a constant seed, never on the run seed, so every run of every grid
    evaluates on the same images.
    """
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    bunch = sk_load()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=cfg.test_fraction, random_state=1797, stratify=y
    )
    return Dataset("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                   torch.from_numpy(x_te), torch.from_numpy(y_te), 10)


@DATASETS.register(
    "synthetic",
    description="Seeded Gaussian classes: dataset.samples, .classes, .dims and .noise set the shape.",
    input_shape="dims",
)
def load_synthetic(cfg: DatasetConfig, seed: int = 0) -> Dataset:
    """Draw class means from N(0, I) and samples from N(mean, noise^2 I).

    The draw depends on the run seed, so a grid over seeds varies the data too.
    """
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    means = torch.randn(cfg.classes, cfg.dims, generator=g) * 2.0

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(cfg.classes, (n,), generator=g)
        x = means[y] + cfg.noise * torch.randn(n, cfg.dims, generator=g)
        return x.float(), y.long()

    x_tr, y_tr = draw(cfg.samples)
    x_te, y_te = draw(cfg.test_samples)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, cfg.classes)
