"""Models and the ParamSpec flat-vector mapping."""

from __future__ import annotations

import pytest
import torch

from fedpoison.models import MODELS, ParamSpec, build_model
from fedpoison.models.zoo import FangDNNParams

SHAPES = {"logreg": (1, 8, 8), "mlp": (1, 8, 8), "cnn8": (1, 8, 8), "cnn28": (1, 28, 28), "fang_dnn": (1, 28, 28), "resnet8": (3, 32, 32)}


@pytest.mark.parametrize("name", MODELS.names())
def test_models_map_inputs_to_logits(name: str) -> None:
    model = build_model(name, SHAPES[name], 10)
    assert model(torch.zeros(4, *SHAPES[name])).shape == (4, 10)
    assert not list(model.buffers()), "flat vectors hold parameters only"


def test_cnn28_has_the_benchmark_layout() -> None:
    model = build_model("cnn28", (1, 28, 28), 10)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(16, 1, 5, 5), (16,), (32, 16, 5, 5), (32,), (128, 512), (128,), (10, 128), (10,)]


def test_fang_dnn_has_the_layers_of_fang_et_al_table_7a() -> None:
    """Conv 3x3 x30, pool 2, conv 3x3 x50, pool 2, dense 200, dense 10: 28 -> 26 -> 13 -> 11 -> 5."""
    model = build_model("fang_dnn", (1, 28, 28), 10)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(30, 1, 3, 3), (30,), (50, 30, 3, 3), (50,), (200, 1250), (200,), (10, 200), (10,)]


def test_fang_dnn_hidden_100_is_foundationfl_table_ixa() -> None:
    """The same convolutions, a dense layer of 100 (FoundationFL, NDSS 2025, Table IXa)."""
    model = build_model("fang_dnn", (1, 28, 28), 10, FangDNNParams(hidden=100))
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(30, 1, 3, 3), (30,), (50, 30, 3, 3), (50,), (100, 1250), (100,), (10, 100), (10,)]


@pytest.mark.parametrize("name", MODELS.names())
def test_paramspec_round_trip_and_load(name: str) -> None:
    model = build_model(name, SHAPES[name], 10)
    spec = ParamSpec.of(model)
    flat = spec.flatten(model)
    assert flat.shape == (spec.dim,) and flat.dtype == torch.float32
    assert spec.dim == sum(p.numel() for p in model.parameters())
    x = torch.rand(2, *SHAPES[name])
    before = model(x)
    spec.load_(model, flat.clone())
    assert torch.equal(model(x), before)
    spec.load_(model, flat + 1.0)  # loading changes the module
    assert torch.equal(spec.flatten(model), flat + 1.0)
    views = spec.unflatten(torch.stack([flat, flat]))
    assert all(v.shape[0] == 2 for v in views.values())


@pytest.mark.parametrize("name", MODELS.names())
def test_fast_layout_keeps_the_function_and_load_flatten_round_trip(name: str) -> None:
    from fedpoison.models.paramspec import has_conv2d, use_fast_layout_

    torch.manual_seed(0)
    model = build_model(name, SHAPES[name], 10)
    spec = ParamSpec.of(model)
    x = torch.rand(8, *SHAPES[name])
    before = model(x).detach()
    flat = spec.flatten(model)
    use_fast_layout_(model)
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert bool(conv_weights) == has_conv2d(model)
    torch.testing.assert_close(model(x), before)
    assert torch.equal(spec.flatten(model), flat), "the flat vector keeps its element order"
    other = torch.randn(spec.dim)
    spec.load_(model, other)
    assert torch.equal(spec.flatten(model), other)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights), "load_ keeps the layout"


@pytest.mark.parametrize(("name", "kernel", "padding"), [("cnn28", 5, 0), ("cnn8", 3, 1), ("fang_dnn", 3, 0)])
def test_pooling_before_relu_computes_the_conv_relu_pool_network(name: str, kernel: int, padding: int) -> None:
    """The zoo pools before the ReLU (faster); outputs and gradients equal the usual order's."""
    torch.manual_seed(0)
    ours = build_model(name, SHAPES[name], 10)
    usual = torch.nn.Sequential(*[
        torch.nn.ReLU() if isinstance(m, torch.nn.MaxPool2d) else torch.nn.MaxPool2d(2) if isinstance(m, torch.nn.ReLU)
        and i in (2, 5) else m for i, m in enumerate(ours)
    ])
    assert [type(m).__name__ for m in usual][:6] == ["Conv2d", "ReLU", "MaxPool2d"] * 2
    assert [n for n, _ in usual.named_parameters()] == [n for n, _ in ours.named_parameters()]
    x, y = torch.randn(16, *SHAPES[name]), torch.randint(0, 10, (16,))
    assert torch.equal(ours(x), usual(x))
    g1 = torch.autograd.grad(torch.nn.functional.cross_entropy(ours(x), y), list(ours.parameters()))
    g2 = torch.autograd.grad(torch.nn.functional.cross_entropy(usual(x), y), list(usual.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)
