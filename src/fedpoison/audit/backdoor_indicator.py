"""``backdoor_indicator``: plant an indicator task on out-of-distribution samples, flag models that keep it.

Reference: Songze Li and Yanbo Dai, "BackdoorIndicator: Leveraging OOD Data
for Proactive Backdoor Detection in Federated Learning", USENIX Security 2024;
the authors' code (``IndicatorServer``) settles the details below.

Each round, before the clients train, the server

1. **plants the indicator**: it fine-tunes the global model :math:`\\theta` on
   ``audit.bi_samples`` out-of-distribution (OOD) images, each given a label
   drawn so that every class gets the same share, minimising

   .. math:: \\mathcal{L}(\\theta') = \\mathrm{CE}(\\theta'; X_{OOD}, Y_{OOD})
             + \\frac{\\mu}{2} \\|\\theta' - \\theta\\|^2

   with SGD (``bi_lr`` 0.005, momentum 0.9, weight decay 5e-4, batch 64,
   ``bi_epochs`` 200 passes, the learning rate times 0.8 at passes 10, 20, 30,
   160, 200, ..., 360; :math:`\\mu` = ``bi_mu`` 0.1), and sends
   :math:`\\theta'` to the clients in place of :math:`\\theta`. The round's
   aggregate is applied to :math:`\\theta'`, as the authors' server does.
2. **inspects each received model** :math:`\\theta' + u_i` on the same OOD
   images: for every class :math:`c`, the accuracy on the images labelled
   :math:`c`; the row's score is the largest of these,

   .. math:: s_i = \\max_c \\frac{|\\{x \\in X_c : f_{\\theta' + u_i}(x) = c\\}|}{|X_c|}.

   A backdoor is itself an OOD task mapped to one target label, so training
   it keeps the indicator alive for that label, while benign training on
   in-distribution data wears the indicator down. Rows with
   :math:`s_i \\ge` ``bi_threshold`` (0.95) are flagged; the policy
   (``audit.policy``, ``exclude`` by default) acts on the flags.

**Where the OOD images come from** (``audit.bi_source``):

- ``digits`` (default): scikit-learn's handwritten digits, which fedpoison
  ships, resized to the run's image size (bilinear) and repeated over its
  channels. The server draws them from that dataset's training split, not from
  any client's data. For a run on ``digits`` itself this is refused.
- ``shuffled``: ``bi_samples`` images of the run's own training set (the
  server's data, as ``fltrust``'s root set), with one fixed random permutation
  of pixel positions applied to all of them: same pixel statistics, no
  in-distribution structure.

**Threat model.** The server holds the OOD set (and, with ``shuffled``, that
many samples of the training distribution) and runs a private copy of the
model; the clients see only :math:`\\theta'`. An attacker that knows the
indicator could train against it; fedpoison's attacks do not.

Deviations: the authors' indicator images are another dataset (e.g. CIFAR-100
for CIFAR-10) normalised as that dataset; here pixel values stay in ``[0, 1]``,
the range of every fedpoison image dataset. The authors restore batch-norm
statistics after planting; fedpoison's models have no buffers (GroupNorm), so
there is nothing to restore. Only runs of the simulation loop plant the
indicator (the Flower strategy does not); without it (``bind_server`` never
called) the auditor flags only non-finite rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call

from fedpoison.audit.base import AuditDecision, ServerData
from fedpoison.audit.params import PolicyParams
from fedpoison.audit.registry import AUDITORS
from fedpoison.audit.signal_auditor import SignalAuditor
from fedpoison.core.rows import finite_rows
from fedpoison.defenses.base import RoundContext
from fedpoison.errors import ConfigError
from fedpoison.seeding import generator


class BackdoorIndicatorParams(PolicyParams):
    """Parameters of ``backdoor_indicator`` (``audit.*``; the policy keys are shared by every auditor)."""

    #: OOD images: scikit-learn's digits resized (digits), or the server's own samples with shuffled pixels.
    bi_source: Literal["digits", "shuffled"] = "digits"
    #: Number of OOD images (800 in the authors' code).
    bi_samples: int = Field(800, ge=10)
    #: Passes over the OOD images when planting, each round (200 in the authors' code).
    bi_epochs: int = Field(200, ge=1)
    #: Planting: SGD learning rate, momentum, weight decay and batch size (the authors' 0.005, 0.9, 5e-4, 64).
    bi_lr: float = Field(0.005, gt=0.0)
    bi_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    bi_weight_decay: float = Field(5e-4, ge=0.0)
    bi_batch_size: int = Field(64, ge=1)
    #: mu: weight of the proximal term (mu / 2) |theta' - theta|^2 while planting.
    bi_mu: float = Field(0.1, ge=0.0)
    #: A row is flagged when its best per-label indicator accuracy reaches this.
    bi_threshold: float = Field(0.95, gt=0.0, le=1.0)


#: The authors' learning-rate milestones (passes) and decay.
MILESTONES = (10, 20, 30, 160, 200, 240, 280, 320, 360)
GAMMA = 0.8


def balanced_labels(count: int, num_classes: int, g: torch.Generator) -> Tensor:
    """``(count,)`` labels with every class ``count // C`` or ``count // C + 1`` times, shuffled with ``g``."""
    labels = torch.arange(count) % num_classes
    return labels[torch.randperm(count, generator=g)]


def indicator_images(source: str, count: int, data: ServerData, g: torch.Generator) -> Tensor:
    """``(count, *input_shape)`` OOD images from ``source`` (see the module docstring)."""
    shape = tuple(data.x_train.shape[1:])
    if len(shape) != 3:
        raise ConfigError(f"audit.name 'backdoor_indicator': expected an image dataset (C, H, W inputs), got inputs "
                          f"of shape {shape}")
    if source == "digits":
        if data.dataset == "digits":
            raise ConfigError("audit.bi_source: expected a dataset other than the run's; 'digits' is the run's "
                              "dataset (use audit.bi_source=shuffled)")
        from fedpoison.data.builtin import DigitsParams, load_digits

        pool = load_digits(DigitsParams(), 0).x_train
        idx = torch.randperm(len(pool), generator=g)[:count]
        if count > len(idx):  # more than the 1,347 training digits: repeat them
            idx = idx.repeat((count + len(idx) - 1) // len(idx))[:count]
        imgs = F.interpolate(pool[idx], size=shape[1:], mode="bilinear", align_corners=False).clamp(0.0, 1.0)
        return imgs.repeat(1, shape[0], 1, 1)
    if count > len(data.x_train):
        raise ConfigError(f"audit.bi_samples: expected at most {len(data.x_train)} samples of the training set, "
                          f"got {count}")
    idx = torch.randperm(len(data.x_train), generator=g)[:count]
    flat = data.x_train[idx.to(data.x_train.device)].reshape(count, -1)
    perm = torch.randperm(flat.shape[1], generator=g).to(flat.device)
    return flat[:, perm].reshape(count, *shape)


@dataclass
class _Indicator:
    """The bound server side: the private model, the OOD set and its labels."""

    model: nn.Module
    unflatten: Any
    x: Tensor
    y: Tensor
    num_classes: int
    seed: int


def plant_indicator(ind: _Indicator, params: Tensor, p: BackdoorIndicatorParams, rnd: int) -> Tensor:
    """:math:`\\theta'`: ``params`` fine-tuned on the indicator set with the proximal term (a new tensor)."""
    anchor = params.detach()
    theta = anchor.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=p.bi_lr, momentum=p.bi_momentum, weight_decay=p.bi_weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(MILESTONES), gamma=GAMMA)
    g = generator(ind.seed, "indicator", rnd)
    n, bs = len(ind.y), p.bi_batch_size
    for _ in range(p.bi_epochs):
        order = torch.randperm(n, generator=g).to(ind.x.device)
        for start in range(0, n - bs + 1 if n >= bs else 1, bs):  # drop the last partial batch, as the authors
            idx = order[start:start + bs]
            logits = functional_call(ind.model, ind.unflatten(theta), (ind.x[idx],))
            loss = F.cross_entropy(logits, ind.y[idx]) + 0.5 * p.bi_mu * (theta - anchor).square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return theta.detach()


@torch.no_grad()
def indicator_scores(ind: _Indicator, base: Tensor, updates: Tensor, batch: int = 1024) -> Tensor:
    """``(n,)`` best per-label accuracy of each model ``base + u_i`` on the indicator set (NaN for non-finite rows)."""
    counts = torch.bincount(ind.y, minlength=ind.num_classes).clamp_min(1).to(torch.float32)
    finite = finite_rows(updates)
    out = torch.full((updates.shape[0],), float("nan"))
    for i in torch.nonzero(finite).flatten().tolist():
        tensors = ind.unflatten(base + updates[i])
        preds = torch.cat([functional_call(ind.model, tensors, (ind.x[s:s + batch],)).argmax(1)
                           for s in range(0, len(ind.y), batch)])
        hits = torch.bincount(ind.y[preds == ind.y], minlength=ind.num_classes).to(torch.float32)
        out[i] = float((hits / counts).max())
    return out


@AUDITORS.register(
    "backdoor_indicator",
    tags=("needs_root_data", "stateful"),
    description="BackdoorIndicator: plant an indicator task on OOD images into the model sent to clients; flag "
    "received models whose best per-label indicator accuracy reaches audit.bi_threshold.",
    params=BackdoorIndicatorParams,
    reference="Li & Dai 2024, BackdoorIndicator: Leveraging OOD Data for Proactive Backdoor Detection in Federated "
    "Learning (USENIX Security).",
    variant="planting every round; OOD = resized scikit-learn digits (or pixel-shuffled server samples); "
    "score = max per-label indicator accuracy, flag at 0.95",
    signals="indicator",
)
class BackdoorIndicator(SignalAuditor):
    """Plants the indicator in :meth:`broadcast`, scores the received models in :meth:`screen`."""

    def __init__(self, params: BackdoorIndicatorParams, *, num_clients: int) -> None:
        super().__init__(params, num_clients=num_clients, tails={"norm": "upper"})
        self.bi = params
        self._ind: _Indicator | None = None
        self._planted: Tensor | None = None

    def bind_server(self, data: ServerData) -> None:
        """Take the server's private model copy and draw the indicator set (once per run)."""
        g = generator(data.seed, "indicator")
        x = indicator_images(self.bi.bi_source, self.bi.bi_samples, data, g).to(data.x_train.device)
        y = balanced_labels(self.bi.bi_samples, data.num_classes, g).to(data.x_train.device)
        model = copy.deepcopy(data.model)
        for q in model.parameters():
            q.requires_grad_(False)
        self._ind = _Indicator(model, data.unflatten, x, y, data.num_classes, data.seed)

    def broadcast(self, round: int, params: Tensor) -> Tensor:
        """The model sent to the clients this round: ``params`` with the indicator planted."""
        if self._ind is None:
            return params
        self._planted = plant_indicator(self._ind, params, self.bi, round)
        return self._planted

    def screen(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AuditDecision:
        """Score each received model on the indicator set; flag at ``bi_threshold`` (and every non-finite row)."""
        n = updates.shape[0]
        if ctx.client_ids.shape[0] != n:
            raise ValueError(f"screen: expected {n} client ids for {n} rows, got {ctx.client_ids.shape[0]}")
        self._check_ids(ctx.client_ids)
        nonfinite = ~finite_rows(updates).cpu()
        if self._ind is None:
            score = torch.zeros(n)
        else:
            score = indicator_scores(self._ind, ctx.global_params.to(updates.device), updates).cpu()
        flagged = (torch.nan_to_num(score, nan=1.0) >= self.bi.bi_threshold) | nonfinite
        score = torch.nan_to_num(score, nan=1.0)
        cpu_ids = ctx.client_ids.cpu().long()
        self.seen[cpu_ids] = True
        return self.decide_rows(cpu_ids, flagged, score, {"indicator": score.clone()}, updates.device)
