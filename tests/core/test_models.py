"""Models and the ParamSpec flat-vector mapping."""

from __future__ import annotations

import pytest
import torch

from fedpoison.config import ModelConfig
from fedpoison.models import MODELS, ParamSpec, build_model

SHAPES = {"logreg": (1, 8, 8), "mlp": (1, 8, 8), "cnn8": (1, 8, 8), "cnn28": (1, 28, 28), "resnet8": (3, 32, 32)}


@pytest.mark.parametrize("name", MODELS.names())
def test_models_map_inputs_to_logits(name: str) -> None:
    model = build_model(name, SHAPES[name], 10, ModelConfig())
    assert model(torch.zeros(4, *SHAPES[name])).shape == (4, 10)
    assert not list(model.buffers()), "flat vectors hold parameters only"


def test_cnn28_has_the_benchmark_layout() -> None:
    model = build_model("cnn28", (1, 28, 28), 10, ModelConfig())
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(16, 1, 5, 5), (16,), (32, 16, 5, 5), (32,), (128, 512), (128,), (10, 128), (10,)]


@pytest.mark.parametrize("name", MODELS.names())
def test_paramspec_round_trip_and_bind(name: str) -> None:
    model = build_model(name, SHAPES[name], 10, ModelConfig())
    spec = ParamSpec.of(model)
    flat = spec.flatten(model)
    assert flat.shape == (spec.dim,) and flat.dtype == torch.float32
    assert spec.dim == sum(p.numel() for p in model.parameters())
    x = torch.rand(2, *SHAPES[name])
    before = model(x)
    buf = flat.clone()
    spec.bind(model, buf)
    assert torch.equal(model(x), before)
    buf.add_(1.0)  # writing the buffer changes the module
    assert torch.equal(spec.flatten(model), flat + 1.0)
    views = spec.unflatten(torch.stack([flat, flat]))
    assert all(v.shape[0] == 2 for v in views.values())
