"""Run flat parameter vectors of a model on inputs: the server's :class:`~fedpoison.defenses.base.ModelProbe`.

Defenses that inspect model outputs (DeepSight's division differences) get
one as ``RoundContext.model``. It reuses one module, loads each vector into it
and runs it without gradients, in batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedpoison.models.paramspec import ParamSpec


@dataclass
class FlatModelProbe:
    """Logits of ``module`` with any flat parameter vector laid out by ``spec``.

    Attributes
    ----------
    module:
        A private copy of the model (its parameters are overwritten on each call).
    spec:
        The flat layout of its parameters.
    input_shape, num_classes:
        What the model takes and returns.
    batch_size:
        Inputs per forward pass (speed and memory only).
    """

    module: nn.Module
    spec: ParamSpec
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int = 1024

    @torch.no_grad()
    def logits(self, params: Tensor, inputs: Tensor) -> Tensor:
        """``(b, num_classes)`` logits of the model with flat ``params`` on ``inputs``."""
        device = next(self.module.parameters()).device
        self.spec.load_(self.module, params.to(device))
        self.module.eval()
        x = inputs.to(device)
        out = [self.module(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.num_classes, device=device)
