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
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedpoison.models.paramspec import ParamSpec


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


class SequentialEngine:
    """Train clients one after another on one model whose parameters view a flat buffer.

    The model's parameters share storage with ``self.flat``
    (:meth:`ParamSpec.bind`), so loading the global model is one ``copy_`` and
    reading the update is one subtraction; nothing is copied per step.
    """

    name = "sequential"

    def __init__(self, model: nn.Module, spec: ParamSpec, plan: LocalPlan) -> None:
        self.model = model
        self.spec = spec
        self.plan = plan
        self.flat = torch.zeros(spec.dim, device=next(model.parameters()).device)
        spec.bind(model, self.flat)
        self.opt = torch.optim.SGD(
            model.parameters(), lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay
        )

    def train_one(self, global_params: Tensor, job: ClientJob) -> tuple[Tensor, float]:
        """Train one client from ``global_params``; return ``(update, mean loss)``."""
        self.flat.copy_(global_params)
        self.opt.state.clear()  # momentum starts from zero every round, as on a fresh client
        model, opt = self.model, self.opt
        model.train()
        total = torch.zeros((), device=self.flat.device)
        steps = batch_schedule(job.size, self.plan, job.generator)
        for pos in steps:
            idx = job.index[pos.to(job.index.device)]
            loss = F.cross_entropy(model(job.x[idx]), job.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        return self.flat - global_params, float(total) / max(len(steps), 1)

    def train(self, global_params: Tensor, jobs: list[ClientJob]) -> tuple[Tensor, Tensor]:
        """Train ``jobs``; return the ``(m, d)`` update matrix and ``(m,)`` mean losses."""
        updates = torch.empty(len(jobs), self.spec.dim, device=global_params.device)
        losses = torch.empty(len(jobs))
        for j, job in enumerate(jobs):
            updates[j], losses[j] = self.train_one(global_params, job)
        return updates, losses


def clip_rows(updates: Tensor, max_norm: float) -> tuple[Tensor, Tensor]:
    """Scale each row to L2 norm at most ``max_norm``; return ``(clipped, was_clipped)``."""
    norms = updates.norm(dim=1)
    scale = torch.clamp(max_norm / norms.clamp_min(1e-12), max=1.0)
    return updates * scale[:, None], norms > max_norm


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
