"""Learned triggers: optimised against the model, not fixed in advance.

Two trigger kinds beyond the fixed ``pixel``, ``patch`` and ``blended`` ones of
:mod:`fedpoison.attacks.backdoor`:

- an **optimised pattern** (A3FL): a :class:`~fedpoison.attacks.backdoor.Trigger`
  whose mask is fixed and whose pattern is learned by signed gradient steps
  (:func:`optimise_pattern`); it is stamped like any other trigger;
- a **generated perturbation** (IBA): :class:`GeneratedTrigger`, a small
  network :math:`G` that gives each input its own additive perturbation
  :math:`\\delta(x) = \\varepsilon \\tanh(\\cdot)`, so
  :math:`\\lVert \\delta(x) \\rVert_\\infty \\le \\varepsilon` for every
  input (:func:`train_generator`).

The model being attacked is never a module here: the functions take a
template module, its :class:`~fedpoison.models.paramspec.ParamSpec` and a
flat parameter vector, and call the template with
:func:`torch.func.functional_call`, so the template is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from fedpoison.attacks.backdoor import Trigger, stamp
from fedpoison.core.rows import cosine_to
from fedpoison.models.paramspec import ParamSpec
from fedpoison.training.local import LocalPlan, batch_schedule, sgd_step_

__all__ = [
    "GeneratedTrigger",
    "adversarial_params",
    "data_range",
    "forward",
    "make_generator",
    "optimise_pattern",
    "train_generator",
]


def forward(model: nn.Module, spec: ParamSpec, params: Tensor, x: Tensor) -> Tensor:
    """Logits of ``model``'s architecture with the flat ``params``, on ``x`` (``model`` unchanged)."""
    out: Tensor = functional_call(model, spec.unflatten(params), (x,))
    return out


def data_range(x: Tensor) -> tuple[float, float]:
    """The ``(min, max)`` of the inputs: triggered inputs are kept inside it."""
    return float(x.min()), float(x.max())


def _batches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> list[Tensor]:
    plan = LocalPlan(epochs=epochs, batch_size=batch_size)
    return batch_schedule(n, plan, generator)


# ---- A3FL: the adversarially perturbed model and the pattern ------------------------------
def adversarial_params(
    model: nn.Module, spec: ParamSpec, global_params: Tensor, x: Tensor, y: Tensor, trigger: Trigger, *,
    epochs: int, lr: float, batch_size: int, generator: torch.Generator,
) -> tuple[Tensor, float]:
    """A3FL's adversarial model: the global model trained to *ignore* the trigger; its weight.

    SGD (momentum 0.9, weight decay 5e-4, as in A3FL's code) from
    ``global_params`` on triggered inputs with their **true** labels, for
    ``epochs`` epochs: the global model as the benign clients' training would
    push it to unlearn the backdoor. Returns the flat parameters and their
    cosine similarity to ``global_params`` (A3FL weights the adversarial loss by it).
    """
    params = global_params.detach().clone().requires_grad_(True)
    buf: Tensor | None = None
    for pos in _batches(len(y), batch_size, epochs, generator):
        loss = F.cross_entropy(forward(model, spec, params, stamp(x[pos], trigger)), y[pos])
        (grad,) = torch.autograd.grad(loss, params)
        with torch.no_grad():
            buf = sgd_step_(params, grad, buf, lr=lr, momentum=0.9, weight_decay=5e-4)
    out = params.detach()
    weight = float(cosine_to(out[None], global_params)[0])
    return out, weight


def optimise_pattern(
    model: nn.Module, spec: ParamSpec, global_params: Tensor, x: Tensor, target: int, trigger: Trigger, *,
    epochs: int, lr: float, batch_size: int, generator: torch.Generator, low: float, high: float,
    adversary: tuple[Tensor, float] | None = None, adv_lambda: float = 0.0,
) -> Trigger:
    """A new trigger with the same mask and a pattern optimised to send ``x`` to ``target``.

    Each step takes the signed gradient of

    .. math:: \\ell(t) = \\mathrm{CE}(f_{\\theta}(x \\oplus t), y_t)
              + \\lambda\\, w\\, \\mathrm{CE}(f_{\\theta_{adv}}(x \\oplus t), y_t)

    with :math:`x \\oplus t` the stamped input, :math:`f_\\theta` the global
    model, :math:`(\\theta_{adv}, w)` the ``adversary`` (from
    :func:`adversarial_params`; the second term is left out without one) and
    :math:`\\lambda` = ``adv_lambda``: :math:`t \\leftarrow \\mathrm{clip}_{[low, high]}(t - \\eta\\,
    \\mathrm{sign}(\\nabla_t \\ell))` on the masked entries, for ``epochs`` passes over ``x``.
    """
    pattern = trigger.pattern.detach().clone().requires_grad_(True)
    mask = trigger.mask
    targets = torch.full((len(x),), target, dtype=torch.long, device=x.device)
    frozen = global_params.detach()
    for pos in _batches(len(x), batch_size, epochs, generator):
        stamped = torch.where(mask, pattern, x[pos])
        loss = F.cross_entropy(forward(model, spec, frozen, stamped), targets[pos])
        if adversary is not None and adv_lambda > 0:
            adv, weight = adversary
            loss = loss + adv_lambda * weight * F.cross_entropy(forward(model, spec, adv, stamped), targets[pos])
        (grad,) = torch.autograd.grad(loss, pattern)
        with torch.no_grad():
            pattern.sub_(lr * grad.sign() * mask).clamp_(low, high)
    return Trigger(mask, pattern.detach(), 1.0)


# ---- IBA: a generator of bounded, input-specific perturbations ----------------------------
def make_generator(input_shape: tuple[int, ...], *, width: int, generator: torch.Generator) -> nn.Module:
    """IBA's trigger generator, scaled down: a small conv auto-encoder ending in ``tanh``.

    Images ``(C, H, W)``: conv 3x3 ``C -> width``, ReLU, conv 3x3
    ``width -> width``, ReLU, conv 3x3 ``width -> C``, tanh (same padding).
    Other shapes: flatten, dense ``D -> width``, ReLU, dense ``width -> D``, tanh.
    Weights are drawn from ``generator``.
    """
    if len(input_shape) == 3:
        c = input_shape[0]
        net: nn.Module = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, c, 3, padding=1), nn.Tanh(),
        )
    else:
        d = 1
        for s in input_shape:
            d *= s
        net = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, d), nn.Tanh(),
                            nn.Unflatten(1, tuple(input_shape)))
    with torch.no_grad():
        for p in net.parameters():
            bound = 1.0 / max(p.shape[1] if p.dim() > 1 else p.shape[0], 1) ** 0.5
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
    return net


@dataclass
class GeneratedTrigger:
    """An input-specific trigger: :math:`x' = \\mathrm{clip}_{[low, high]}(x + \\varepsilon\\, G(x))`.

    ``G`` ends in ``tanh``, so each input's perturbation is bounded by
    ``eps`` in L-infinity (clipping to the data range only shrinks it).
    """

    net: nn.Module
    eps: float
    low: float
    high: float

    def perturbation(self, x: Tensor) -> Tensor:
        """:math:`\\varepsilon\\, G(x)`, differentiable in ``G``'s weights."""
        return self.eps * self.net(x)

    def apply(self, x: Tensor) -> Tensor:
        """Triggered copies of ``x`` (differentiable in ``G``'s weights)."""
        return (x + self.perturbation(x)).clamp(self.low, self.high)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Triggered copies of ``x``, without gradients (for poisoning and evaluation)."""
        return self.apply(x).detach()


def train_generator(
    trigger: GeneratedTrigger, model: nn.Module, spec: ParamSpec, global_params: Tensor, x: Tensor, target: int, *,
    epochs: int, lr: float, batch_size: int, generator: torch.Generator,
) -> list[float]:
    """Train ``trigger``'s generator in place so the frozen global model sends ``G``'s outputs to ``target``.

    Adam (learning rate ``lr``, IBA's optimiser) on
    :math:`\\mathrm{CE}(f_\\theta(\\mathrm{clip}(x + \\varepsilon G(x))), y_t)`
    over every input, for ``epochs`` passes. Returns the mean loss of each epoch.
    """
    opt = torch.optim.Adam(trigger.net.parameters(), lr=lr)
    frozen = global_params.detach()
    targets = torch.full((len(x),), target, dtype=torch.long, device=x.device)
    losses: list[float] = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for pos in _batches(len(x), batch_size, 1, generator):
            loss = F.cross_entropy(forward(model, spec, frozen, trigger.apply(x[pos])), targets[pos])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(pos), count + len(pos)
        losses.append(total / max(count, 1))
    return losses
