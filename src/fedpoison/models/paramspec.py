"""One mapping between a model's parameters and a flat float32 vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedpoison.core.slices import ParamSlice


@dataclass(frozen=True)
class ParamSpec:
    """The layout of a model's trainable parameters in a flat vector.

    Buffers are not part of the vector: the zoo's models have none (the ResNet
    uses GroupNorm, not BatchNorm, for that reason).

    Example
    -------
    >>> m = nn.Linear(3, 2)
    >>> spec = ParamSpec.of(m)
    >>> spec.dim
    8
    >>> torch.equal(spec.unflatten(spec.flatten(m))["weight"], m.weight)
    True
    """

    slices: tuple[ParamSlice, ...]

    @classmethod
    def of(cls, module: nn.Module) -> ParamSpec:
        """Read the layout of ``module``'s named parameters, in registration order."""
        out, start = [], 0
        for name, p in module.named_parameters():
            out.append(ParamSlice(name, start, start + p.numel(), tuple(p.shape)))
            start += p.numel()
        return cls(tuple(out))

    @property
    def dim(self) -> int:
        """Length of the flat vector."""
        return self.slices[-1].end if self.slices else 0

    def flatten(self, module: nn.Module) -> Tensor:
        """A new flat float32 vector of ``module``'s parameters."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).float()

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` shaped as the named parameters (for ``functional_call``).

        ``flat`` may carry leading batch axes: ``(..., dim)`` gives ``(..., *shape)``.
        """
        lead = flat.shape[:-1]
        return {s.name: flat[..., s.start : s.end].reshape(*lead, *s.shape) for s in self.slices}

    @torch.no_grad()
    def load_(self, module: nn.Module, flat: Tensor) -> None:
        """Copy ``flat`` into ``module``'s parameters, in place, whatever their memory layout.

        The inverse of :meth:`flatten`. It works on parameters stored
        ``channels_last`` (see :func:`use_fast_layout_`), whose element order
        differs from the flat vector's, so they cannot simply view it.
        """
        for p, s in zip(module.parameters(), self.slices, strict=True):
            p.copy_(flat[s.start : s.end].view(s.shape))


def has_conv2d(module: nn.Module) -> bool:
    """Whether ``module`` contains a 2-D convolution."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def use_fast_layout_(module: nn.Module) -> nn.Module:
    """Store ``module``'s 4-D parameters ``channels_last`` where that is faster; return ``module``.

    On CPU, a model with 2-D convolutions trains 1.3-2x faster with its
    convolution weights stored ``channels_last``: oneDNN then runs its NHWC
    kernels with no reorder of the weights or activations at each call
    (``benchmarks/RESULTS.md``; the ResNet, whose GroupNorm gains nothing, is
    neither faster nor slower). Elsewhere (a GPU, a model without convolutions)
    the module is left as it is. The function computed is the same; the
    floating-point summation order inside the kernels is not, so results match
    the contiguous layout to rounding, not bit for bit. Use :meth:`ParamSpec.load_`
    and :meth:`ParamSpec.flatten` to move parameters in and out.
    """
    params = list(module.parameters())
    if params and params[0].device.type == "cpu" and has_conv2d(module):
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    return module
