"""Local training of one client: SGD over in-memory tensors, no DataLoader.

A client's data is an index set into tensors that live once in memory. Its
batches come from its own seeded generator, so the same (seed, round, client)
always sees the same batches, whichever engine trains it. The client returns its
update, new minus old parameters, as a flat vector.

FedSGD is the setting ``local.steps: 1`` with ``local.batch_size`` at least the
client's sample count: one full-batch step from the global model, and the update
is ``-lr * gradient`` (the server learning rate rescales it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedpoison.core.rows import clip_factors, row_norms
from fedpoison.models.paramspec import ParamSpec, use_fast_layout_


@dataclass(frozen=True)
class LocalPlan:
    """Hyper-parameters of local SGD (from ``local.*``)."""

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def num_steps(self, n: int) -> int:
        """SGD steps for a client with ``n`` samples."""
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(n / self.batch_size)


@dataclass(frozen=True)
class ClientJob:
    """One client's training job for a round.

    ``x`` and ``y`` are the tensors the client's ``index`` points into: the
    shared training set for honest clients, a poisoned copy of its own samples
    for a malicious one.
    """

    client_id: int
    x: Tensor
    y: Tensor
    index: Tensor
    generator: torch.Generator

    @property
    def size(self) -> int:
        """Number of samples."""
        return int(self.index.numel())


def batch_schedule(n: int, plan: LocalPlan, generator: torch.Generator) -> list[Tensor]:
    """Positions (into the client's index) of each SGD step's batch.

    Each epoch is a fresh permutation cut into batches of ``plan.batch_size``,
    the last one possibly smaller; with ``plan.steps`` set, epochs repeat until
    that many batches are taken. Both engines use this one schedule.
    """
    bs = min(plan.batch_size, n)
    per_epoch = math.ceil(n / bs)
    total = plan.num_steps(n)
    out: list[Tensor] = []
    while len(out) < total:
        perm = torch.randperm(n, generator=generator)
        out.extend(perm[i * bs : (i + 1) * bs] for i in range(min(per_epoch, total - len(out))))
    return out


def sgd_step_(
    params: Tensor,
    grads: Tensor,
    buf: Tensor | None,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> Tensor | None:
    """One :class:`torch.optim.SGD` step on ``params`` (a parameter, or stacked rows of them), in place.

    .. math::

        g_t = \\nabla_t + \\lambda\\, p_{t-1},\\qquad
        b_t = \\begin{cases} g_t & t = 1\\\\ \\mu\\, b_{t-1} + g_t & t > 1\\end{cases},\\qquad
        p_t = p_{t-1} - \\eta\\, b_t

    with :math:`\\lambda` the weight decay, :math:`\\mu` the momentum (:math:`b_t = g_t`
    when :math:`\\mu = 0`) and :math:`\\eta` the learning rate: PyTorch's SGD with
    dampening 0 and ``nesterov=False``, applied elementwise (so row by row on stacked rows).

    Parameters
    ----------
    params:
        Parameters (any shape, e.g. ``(k, d)`` rows or a ``(k, *shape)`` view),
        updated in place.
    grads:
        Gradients of the same shape.
    buf:
        Momentum buffers of the same shape, updated in place, or ``None`` on the
        first step (a new buffer is returned when ``momentum`` is non-zero).

    Returns
    -------
    The momentum buffer to pass to the next step (``None`` without momentum).
    """
    g = grads
    if weight_decay != 0:
        g = g.add(params, alpha=weight_decay)
    if momentum != 0:
        if buf is None:
            buf = g.detach().clone()
        else:
            buf.mul_(momentum).add_(g)
        g = buf
    params.add_(g, alpha=-lr)
    return buf


@dataclass(frozen=True)
class StepHooks:
    """Ways a client's local SGD may depart from plain training (attacks that train themselves).

    Every hook is optional; with none set, training is exactly the honest
    clients' :meth:`SequentialEngine.train_one`.

    Attributes
    ----------
    loss:
        ``loss(model, x_batch, y_batch) -> scalar`` replaces the batch's mean
        cross-entropy (e.g. extra penalty terms).
    grads:
        ``grads(per_parameter_grads) -> per_parameter_grads`` transforms each
        step's gradients before the SGD step (e.g. a coordinate mask). The list
        follows ``model.parameters()``.
    after_step:
        ``after_step(parameters)`` runs under ``torch.no_grad()`` after each SGD
        step and may change the parameters in place (e.g. a projection).
    """

    loss: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None
    grads: Callable[[list[Tensor]], list[Tensor]] | None = None
    after_step: Callable[[Sequence[Tensor]], None] | None = None


class Engine(Protocol):
    """What the round loop needs of a local-training engine.

    :class:`SequentialEngine` and :class:`~fedpoison.training.batched.BatchedEngine`
    compute the same rows (the batched one on many clients at once).
    """

    def train(self, global_params: Tensor, jobs: list[ClientJob]) -> tuple[Tensor, Tensor]:
        """``(k, d)`` updates and ``(k,)`` mean training losses of ``jobs``, from ``global_params``."""
        ...

    def train_one(self, global_params: Tensor, job: ClientJob) -> tuple[Tensor, float]:
        """One client's ``(d,)`` update and mean training loss."""
        ...


class SequentialEngine:
    """Train clients one after another on one model.

    The model's parameters are stored in the fastest layout for the device
    (:func:`~fedpoison.models.paramspec.use_fast_layout_`: ``channels_last``
    convolution weights on CPU). Loading the global model is one copy per
    parameter and reading the update is one flatten and one subtraction per
    client; nothing is copied per step.
    """

    name = "sequential"

    def __init__(self, model: nn.Module, spec: ParamSpec, plan: LocalPlan) -> None:
        self.model = use_fast_layout_(model)
        self.spec = spec
        self.plan = plan
        self.params = list(model.parameters())

    def train_one(
        self, global_params: Tensor, job: ClientJob, hooks: StepHooks | None = None
    ) -> tuple[Tensor, float]:
        """Train one client from ``global_params``; return ``(update, mean loss)``.

        ``hooks`` (attacks that train themselves) change the loss, the
        gradients or the parameters after each step; ``None`` is plain SGD. The SGD step is :func:`sgd_step_` per parameter (``torch.optim.SGD``'s
        update rule; constructing a ``torch.optim.SGD`` imports ``torch._dynamo``,
        about a second per process). Momentum starts from zero every round, as on
        a fresh client.
        """
        model, params, plan = self.model, self.params, self.plan
        self.spec.load_(model, global_params)
        model.train()
        bufs: list[Tensor | None] = [None] * len(params)
        total = torch.zeros((), device=global_params.device)
        steps = batch_schedule(job.size, plan, job.generator)
        for pos in steps:
            idx = job.index[pos.to(job.index.device)]
            xb, yb = job.x[idx], job.y[idx]
            loss = F.cross_entropy(model(xb), yb) if hooks is None or hooks.loss is None else hooks.loss(model, xb, yb)
            grads = list(torch.autograd.grad(loss, params))
            if hooks is not None and hooks.grads is not None:
                grads = hooks.grads(grads)
            with torch.no_grad():
                for j, (p, g) in enumerate(zip(params, grads, strict=True)):
                    bufs[j] = sgd_step_(p, g, bufs[j], lr=plan.lr, momentum=plan.momentum,
                                        weight_decay=plan.weight_decay)
                if hooks is not None and hooks.after_step is not None:
                    hooks.after_step(params)
            total += loss.detach()
        return self.spec.flatten(model).sub_(global_params), float(total) / max(len(steps), 1)

    def train(self, global_params: Tensor, jobs: list[ClientJob]) -> tuple[Tensor, Tensor]:
        """Train ``jobs``; return the ``(m, d)`` update matrix and ``(m,)`` mean losses."""
        updates = torch.empty(len(jobs), self.spec.dim, device=global_params.device)
        losses = torch.empty(len(jobs))
        for j, job in enumerate(jobs):
            updates[j], losses[j] = self.train_one(global_params, job)
        return updates, losses


def clip_rows(updates: Tensor, max_norm: float) -> tuple[Tensor, Tensor]:
    """Scale each row to L2 norm at most ``max_norm``; return ``(clipped, was_clipped)``.

    The factors are :func:`fedpoison.core.rows.clip_factors`, the server's clipping maths.
    """
    norms = row_norms(updates)
    return updates * clip_factors(norms, max_norm)[:, None], norms > max_norm


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, float]:
    """Predictions and mean cross-entropy of ``model`` on ``(x, y)``."""
    model.eval()
    preds, loss = [], torch.zeros(())
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum").cpu()
        preds.append(logits.argmax(1))
    return torch.cat(preds), float(loss) / max(len(y), 1)
