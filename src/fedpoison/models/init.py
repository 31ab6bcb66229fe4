"""Building a model from an explicit generator, and checking that it fits its dataset.

:func:`build_seeded` never draws from torch's global RNG, so runs in several
threads initialise exactly as they would one after another. The model is
built on the ``meta`` device (no values, no draws), moved to real memory, and
every layer of a known kind is initialised from the run's generator with
torch's default scheme for that layer (Kaiming-uniform weights with
``a = sqrt(5)``, uniform biases in ``±1/sqrt(fan_in)``, norms at one and zero).
A model holding layers of other kinds (a user's own) is instead built
normally under a lock, with the global RNG seeded from the generator and
restored afterwards: deterministic, and safe against fedpoison's own threads.

:func:`check_fits` runs a zero batch through the model and raises a
:class:`~fedpoison.errors.ConfigError` when the model does not take the
dataset's input shape or does not give one score per class.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch
from torch import nn

from fedpoison.errors import ConfigError

_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_GLOBAL_RNG_LOCK = threading.Lock()


def _known(model: nn.Module) -> bool:
    """Whether every module holding parameters or buffers directly is of a kind :func:`init_` knows."""
    for m in model.modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if own and not isinstance(m, _LINEAR + _NORMS):
            return False
    return True


@torch.no_grad()
def init_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise every linear, convolution and norm layer of ``model`` in place from ``generator``."""
    for m in model.modules():
        if isinstance(m, _LINEAR):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, _NORMS):
            m.reset_parameters()  # ones and zeros (and fresh running statistics): no draw
    return model


def build_seeded(build: Callable[[], nn.Module], generator: torch.Generator) -> nn.Module:
    """Build a model with ``build()`` and initialise it from ``generator`` (see the module docstring)."""
    with torch.device("meta"):
        probe = build()
    if _known(probe):
        return init_(probe.to_empty(device="cpu"), generator)
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def check_fits(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, what: str) -> None:
    """Raise ConfigError unless ``model`` maps a ``(2, *input_shape)`` batch to ``(2, num_classes)`` scores."""
    x = torch.zeros((2, *input_shape), device=next(model.parameters(), torch.zeros(())).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{what}: does not take inputs of shape {tuple(input_shape)} ({first})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{what}: expected scores of shape (batch, {num_classes}) for {num_classes} classes, "
                          f"got {got} for a batch of 2")
