"""Datasets that need no files: scikit-learn's digits and seeded synthetic Gaussians."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fedpoison.data.base import DATASETS, Dataset


class DigitsParams(BaseModel):
    """Params of the digits dataset."""

    model_config = ConfigDict(extra="forbid")

    #: Share of the 1,797 images held out as the fixed, stratified test split.
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)


class SyntheticParams(BaseModel):
    """Params of the synthetic Gaussian dataset."""

    model_config = ConfigDict(extra="forbid")

    #: Training samples, test samples, classes and dimensions.
    samples: int = Field(6000, ge=10)
    test_samples: int = Field(1000, ge=10)
    classes: int = Field(10, ge=2)
    dims: int = Field(20, ge=1)
    #: Standard deviation of each class around its mean.
    noise: float = Field(1.0, gt=0.0)


@DATASETS.register(
    "digits",
    description="scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); no download.",
    reference="Alpaydin & Kaynak 1998, UCI Optical Recognition of Handwritten Digits (test split).",
    input_shape="1x8x8",
    params=DigitsParams,
    default_model="mlp",
)
def load_digits(params: DigitsParams, seed: int = 0) -> Dataset:
    """Load the digits as ``(N, 1, 8, 8)`` images in ``[0, 1]``.

    The test split is stratified and fixed: it depends on ``params.test_fraction``
    and a constant seed, never on the run seed, so every run of every grid
    evaluates on the same images. It is scikit-learn's ``train_test_split``
    (``random_state=1797``, stratified); for the default fraction its result is
    stored in :mod:`fedpoison.data._digits_split`, so scikit-learn and SciPy are
    not imported.
    """
    pixels, y = _digits_arrays()
    train, test = digits_split(y, params.test_fraction)
    x = (pixels.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return Dataset("digits", torch.from_numpy(x[train]), torch.from_numpy(y[train]),
                   torch.from_numpy(x[test]), torch.from_numpy(y[test]), 10)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 x 64 pixel values (0-16) and labels, read from scikit-learn's bundled CSV.

    The file is located without importing scikit-learn (whose import pulls in
    SciPy); the values are those of ``sklearn.datasets.load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("dataset 'digits': expected scikit-learn installed (it ships the data), found none")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # another scikit-learn layout: ask it
        from sklearn.datasets import load_digits as sk_load

        bunch = sk_load()
        return bunch.data, bunch.target.astype(np.int64)
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


def digits_split(y: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and test split, in scikit-learn's order (see :func:`load_digits`)."""
    from fedpoison.data import _digits_split as stored

    if test_fraction == stored.TEST_FRACTION and len(y) == len(stored.ORDER):
        order = np.asarray(stored.ORDER, dtype=np.int64)
        return order[: stored.N_TRAIN], order[stored.N_TRAIN :]
    return _sklearn_split(y, test_fraction)


def _sklearn_split(y: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=1797, stratify=y)
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def write_stored_split(path: Path | None = None) -> None:
    """Regenerate :mod:`fedpoison.data._digits_split` (needs scikit-learn)."""
    from fedpoison.data import _digits_split as stored

    path = path or Path(__file__).with_name("_digits_split.py")
    train, test = _sklearn_split(_digits_arrays()[1], stored.TEST_FRACTION)
    order = [*train.tolist(), *test.tolist()]
    rows = "\n".join("    " + ", ".join(map(str, order[i : i + 20])) + "," for i in range(0, len(order), 20))
    doc = (stored.__doc__ or "").strip()
    path.write_text(f'"""{doc}\n"""\n\nTEST_FRACTION = {stored.TEST_FRACTION}\nN_TRAIN = {len(train)}\n'
                    f"ORDER = (\n{rows}\n)\n")


@DATASETS.register(
    "synthetic",
    description="Seeded Gaussian classes: dataset.samples, .classes, .dims and .noise set the shape.",
    input_shape="dims",
    params=SyntheticParams,
    default_model="mlp",
)
def load_synthetic(params: SyntheticParams, seed: int = 0) -> Dataset:
    """Draw class means from N(0, I) and samples from N(mean, noise^2 I).

    The draw depends on the run seed, so a grid over seeds varies the data too.
    """
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    means = torch.randn(params.classes, params.dims, generator=g) * 2.0

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(params.classes, (n,), generator=g)
        x = means[y] + params.noise * torch.randn(n, params.dims, generator=g)
        return x.float(), y.long()

    x_tr, y_tr = draw(params.samples)
    x_te, y_te = draw(params.test_samples)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, params.classes)
