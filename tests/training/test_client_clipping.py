"""Client-side clipping (``local.clip_norm``): the server's clip factors, on a hand-worked case."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from fedpoison.training import clip_rows


def test_clip_rows_by_hand() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]])  # norms 5, 0, 0.5
    before = x.clone()
    out, was = clip_rows(x, 1.0)
    assert_close(out, torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.3, 0.4]]))
    assert was.tolist() == [True, False, False]
    assert torch.equal(x, before)
