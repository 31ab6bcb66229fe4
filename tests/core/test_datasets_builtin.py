"""The digits load without scikit-learn's import and equal what scikit-learn gives."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fedpoison.data import load_dataset
from fedpoison.data.builtin import _sklearn_split, digits_split
from fedpoison.plugins import load_config


def _reference(test_fraction: float) -> tuple[np.ndarray, ...]:
    """The digits as the loader computed them with scikit-learn."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    bunch = sk_load()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return tuple(train_test_split(x, bunch.target.astype(np.int64), test_size=test_fraction,
                                  random_state=1797, stratify=bunch.target))


@pytest.mark.parametrize("fraction", [0.25, 0.3])
def test_digits_equal_scikit_learns_split_bit_for_bit(fraction: float) -> None:
    ds = load_dataset(load_config(overrides=[f"dataset.test_fraction={fraction}"]).dataset)
    x_tr, x_te, y_tr, y_te = _reference(fraction)
    assert torch.equal(ds.x_train, torch.from_numpy(x_tr)) and torch.equal(ds.y_train, torch.from_numpy(y_tr))
    assert torch.equal(ds.x_test, torch.from_numpy(x_te)) and torch.equal(ds.y_test, torch.from_numpy(y_te))


def test_stored_split_is_scikit_learns() -> None:
    from sklearn.datasets import load_digits as sk_load

    y = sk_load().target
    for ours, theirs in zip(digits_split(y, 0.25), _sklearn_split(y, 0.25), strict=True):
        assert np.array_equal(ours, theirs)


def test_default_digits_do_not_import_scikit_learn() -> None:
    code = ("import sys; from fedpoison.plugins import load_config; from fedpoison.data import load_dataset; "
            "ds = load_dataset(load_config().dataset); print(len(ds.y_train), len(ds.y_test), "
            "any(m == 'sklearn' or m.startswith('sklearn.') or m == 'scipy' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1347", "450", "False"]
