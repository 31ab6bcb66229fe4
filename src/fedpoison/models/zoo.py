"""The model zoo: small vision models used in the poisoning literature."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from fedpoison.registry import NoParams, Registry

#: Factory signature: ``fn(input_shape, num_classes, params) -> nn.Module``, where
#: ``params`` is an instance of the model's registered params model.
ModelFactory = Callable[[tuple[int, ...], int, Any], nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")


class MLPParams(BaseModel):
    """Params of the one-hidden-layer MLP."""

    model_config = ConfigDict(extra="forbid")

    #: Hidden width.
    hidden: int = Field(64, ge=1)


class FangDNNParams(BaseModel):
    """Params of ``fang_dnn``."""

    model_config = ConfigDict(extra="forbid")

    #: Width of the dense ReLU layer: 200 in Fang et al.'s Table 7a, 100 in FoundationFL's Table IXa.
    hidden: int = Field(200, ge=1)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, params: Any = None) -> nn.Module:
    """Build the registered model ``name`` for inputs of ``input_shape``.

    ``params`` is the model's params instance, or a config's ``model`` section
    (its keys are validated against the model's params), or ``None`` for the
    defaults.
    """
    entry = MODELS.get(name, key="model.name")
    if params is None:
        params = entry.params()
    elif not isinstance(params, entry.params) and callable(getattr(params, "params", None)):
        params = params.params(entry.params)
    return entry.obj(input_shape, num_classes, params)


def _conv_pool_relu(cin: int, cout: int, kernel: int, padding: int = 0) -> tuple[nn.Module, ...]:
    """Convolution, 2x2 max-pooling, then ReLU.

    ``relu(maxpool(z)) == maxpool(relu(z))`` exactly (ReLU is monotone), and the
    gradients agree too, except on exact ties inside a pooling window. Pooling
    first runs the ReLU, its backward pass and the pooling's zero-fill on a
    quarter of the values: 1.3x faster training of cnn28 on CPU
    (``benchmarks/RESULTS.md``). The parameter names are those of the
    conv-ReLU-pool order, so saved models load either way.
    """
    return nn.Conv2d(cin, cout, kernel, padding=padding), nn.MaxPool2d(2), nn.ReLU()


@MODELS.register("logreg", description="Multinomial logistic regression on flattened inputs.", params=NoParams)
def logreg(input_shape: tuple[int, ...], num_classes: int, params: NoParams) -> nn.Module:
    """Multinomial logistic regression on flattened inputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


@MODELS.register("mlp", description="One hidden ReLU layer of model.hidden units on flattened inputs.", params=MLPParams)
def mlp(input_shape: tuple[int, ...], num_classes: int, params: MLPParams) -> nn.Module:
    """One hidden ReLU layer of ``params.hidden`` units on flattened inputs."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), params.hidden),
        nn.ReLU(),
        nn.Linear(params.hidden, num_classes),
    )


@MODELS.register(
    "cnn28",
    description="CNN for 1x28x28: conv 1->16 k5, pool, conv 16->32 k5, pool, fc 512->128, fc 128->C.",
    reference="The two-conv CNN of the poisoning literature (e.g. Fang et al. 2020, Cao et al. 2021).",
)
def cnn28(input_shape: tuple[int, ...], num_classes: int, params: NoParams) -> nn.Module:
    """The two-conv CNN, ReLU after max-pooling (see :func:`_conv_pool_relu`)."""
    c = input_shape[0]
    return nn.Sequential(
        *_conv_pool_relu(c, 16, 5),
        *_conv_pool_relu(16, 32, 5),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )


@MODELS.register(
    "fang_dnn",
    description=("Fang et al.'s DNN for 1x28x28: conv 3x3 30, pool 2, conv 3x3 50, pool 2, fc model.hidden "
                 "(200) ReLU, fc C."),
    params=FangDNNParams,
    reference=("Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust FL (USENIX Security), Table 7a; "
               "with hidden: 100, the CNN of Fang et al. 2025 (FoundationFL, NDSS), Table IXa."),
)
def fang_dnn(input_shape: tuple[int, ...], num_classes: int, params: FangDNNParams) -> nn.Module:
    """The DNN of Fang et al.'s Table 7a (MNIST / Fashion-MNIST).

    The table lists the layers but no activation after the convolutions; a ReLU
    follows each (after the pooling, see :func:`_conv_pool_relu`). Valid
    convolutions: 28 -> 26 -> 13 -> 11 -> 5, so the dense layer sees 50 x 5 x 5.
    The softmax is in the loss. ``model.hidden: 100`` gives FoundationFL's
    Table IXa CNN (the same layers, ReLU after each convolution stated, a dense
    layer of 100).
    """
    c, h, w = input_shape
    side_h, side_w = ((h - 2) // 2 - 2) // 2, ((w - 2) // 2 - 2) // 2
    return nn.Sequential(
        *_conv_pool_relu(c, 30, 3),
        *_conv_pool_relu(30, 50, 3),
        nn.Flatten(), nn.Linear(50 * side_h * side_w, params.hidden), nn.ReLU(), nn.Linear(params.hidden, num_classes),
    )


@MODELS.register("cnn8", description="CNN for 1x8x8 digits: conv 1->16 k3, pool, conv 16->32 k3, pool, fc 128->64->C.")
def cnn8(input_shape: tuple[int, ...], num_classes: int, params: NoParams) -> nn.Module:
    """The small digits CNN, ReLU after max-pooling (see :func:`_conv_pool_relu`)."""
    c = input_shape[0]
    return nn.Sequential(
        *_conv_pool_relu(c, 16, 3, padding=1),
        *_conv_pool_relu(16, 32, 3, padding=1),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


class _Block(nn.Module):
    """Pre-activation-free basic residual block with GroupNorm."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(min(8, cout), cout))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(out)) + self.skip(x))


@MODELS.register(
    "resnet8",
    description="Small ResNet for 3x32x32 colour images: 3 stages (16, 32, 64), GroupNorm, no buffers.",
    reference="He et al. 2016 (CIFAR ResNet), with GroupNorm as in Hsieh et al. 2020 for non-IID FL.",
)
def resnet8(input_shape: tuple[int, ...], num_classes: int, params: NoParams) -> nn.Module:
    """A small GroupNorm ResNet for 3x32x32 images (3 stages: 16, 32, 64 channels)."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, 1, 1, bias=False), nn.GroupNorm(8, 16), nn.ReLU(),
        _Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )
