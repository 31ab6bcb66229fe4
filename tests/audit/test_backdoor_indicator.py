"""BackdoorIndicator: the score is the best per-label indicator accuracy; planting teaches the indicator."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from fedpoison.audit.backdoor_indicator import (
    BackdoorIndicator,
    BackdoorIndicatorParams,
    _Indicator,
    balanced_labels,
    indicator_scores,
)
from fedpoison.audit.base import ServerData
from fedpoison.data.builtin import DigitsParams, load_digits
from fedpoison.models import ParamSpec
from fedpoison.testing import make_round_context


def _linear_indicator() -> tuple[_Indicator, ParamSpec]:
    """Four basis images (1x2x2) labelled 0, 1, 2, 0; a bias-free linear model: logits = W[:, j] for image j."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    spec = ParamSpec.of(model)
    x = torch.eye(4).reshape(4, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0])
    return _Indicator(model, spec.unflatten, x, y, 3, 0), spec


def _weights_predicting(labels: list[int]) -> torch.Tensor:
    """Flat W (3x4) whose prediction for image j is ``labels[j]``."""
    w = torch.zeros(3, 4)
    w[torch.tensor(labels), torch.arange(4)] = 1.0
    return w.reshape(-1)


def test_score_is_the_best_per_label_accuracy() -> None:
    ind, _ = _linear_indicator()
    base = torch.zeros(12)
    keeps = _weights_predicting([0, 1, 2, 0])       # every indicator label right: 1
    erased = _weights_predicting([1, 2, 0, 1])      # every one wrong: 0
    half = _weights_predicting([0, 1, 0, 2])        # label 0: 1/2, label 1: 1/1, label 2: 0/1 -> 1
    quarter = _weights_predicting([0, 0, 0, 1])     # label 0: 1/2 -> 0.5
    scores = indicator_scores(ind, base, torch.stack([keeps, erased, half, quarter]))
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.5]


def test_flags_the_row_that_keeps_the_indicator_and_not_the_one_that_does_not() -> None:
    ind, _ = _linear_indicator()
    aud = BackdoorIndicator(BackdoorIndicatorParams(policy="exclude"), num_clients=5)
    aud._ind = ind
    planted = _weights_predicting([0, 1, 2, 0])
    ctx = make_round_context(3, 12)
    ctx.global_params = planted
    updates = torch.stack([torch.zeros(12),                                     # keeps the planted indicator
                           _weights_predicting([1, 2, 0, 1]) - planted,         # training erased it
                           torch.full((12,), float("nan"))])                    # non-finite: always flagged
    dec = aud.screen(updates, torch.ones(3), ctx)
    assert dec.flagged.tolist() == [True, False, True]
    assert dec.keep.tolist() == [False, True, False]
    assert dec.signals["indicator"].tolist()[:2] == [1.0, 0.0]


def test_balanced_labels_give_every_class_its_share() -> None:
    y = balanced_labels(23, 5, torch.Generator().manual_seed(0))
    assert torch.bincount(y, minlength=5).tolist() == [5, 5, 5, 4, 4]


def test_planting_teaches_the_indicator_and_is_seeded() -> None:
    data = load_digits(DigitsParams(), 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    spec = ParamSpec.of(model)
    params = BackdoorIndicatorParams(bi_source="shuffled", bi_samples=60, bi_epochs=100, bi_lr=0.1, bi_batch_size=20,
                                     bi_mu=0.01)
    server = ServerData(model, spec.unflatten, data.x_train, data.y_train, 10, "digits", 3)
    aud = BackdoorIndicator(params, num_clients=4)
    aud.bind_server(server)
    base = spec.flatten(model)
    planted = aud.broadcast(0, base)
    assert not torch.equal(planted, base)
    assert torch.equal(planted, aud.broadcast(0, base))  # same round, same generator: same bits
    assert aud._ind is not None
    ind = aud._ind

    def accuracy(flat: torch.Tensor) -> float:  # over the whole indicator set, every label
        logits = torch.func.functional_call(ind.model, ind.unflatten(flat), (ind.x,))
        return float((logits.argmax(1) == ind.y).float().mean())

    assert accuracy(base) < 0.5 and accuracy(planted) >= 0.95
    assert float(indicator_scores(ind, planted, torch.zeros(1, spec.dim))[0]) >= params.bi_threshold
    # the OOD set is shuffled server data: same pixel values as the training images, in other positions
    assert aud._ind.x.shape == (60, 1, 8, 8)


def test_digits_as_ood_source_is_refused_for_a_digits_run() -> None:
    from fedpoison.errors import ConfigError

    data = load_digits(DigitsParams(), 0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    aud = BackdoorIndicator(BackdoorIndicatorParams(), num_clients=4)
    with pytest.raises(ConfigError, match=r"audit\.bi_source"):
        aud.bind_server(ServerData(model, ParamSpec.of(model).unflatten, data.x_train, data.y_train, 10, "digits", 0))


@pytest.mark.slow
def test_end_to_end_flags_backdoor_attackers_on_digits(tmp_path) -> None:
    import fedpoison

    res = fedpoison.run(overrides={"clients.num": 10, "rounds": 3, "attack.name": "backdoor", "attack.fraction": 0.2,
                                   "audit.name": "backdoor_indicator", "audit.bi_source": "shuffled",
                                   "audit.bi_samples": 200, "audit.bi_epochs": 10, "audit.policy": "flag"})
    log = pd.DataFrame(res.clients)
    attacked = log[log["attacked"]]
    assert attacked["flagged"].mean() >= 0.8
