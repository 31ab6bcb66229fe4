"""Chameleon: contrastive training pulls poisoned features toward the target class.

Reference: Dai and Li, 'Chameleon: Adapting to Peer Images for Planting
Durable Backdoors in Federated Learning', ICML 2023.

Exact variant. Each attacking client poisons ``poison_fraction`` of its
samples with the BadNets trigger of ``backdoor`` (same keys) and relabels them
to ``target_class``, then:

1. **contrastive stage**: the model's encoder (every layer but the last, a
   ``Linear`` classifier; no projection head, as in the authors' code) is
   trained from the global model for ``contrastive_epochs`` epochs with the
   supervised contrastive loss :func:`supcon_loss` on the L2-normalised
   features, temperature ``temperature``; anchors of the target class weigh
   ``target_weight`` times more, so the poisoned images are pulled toward their
   peers, the target class's clean images. SGD with ``contrastive_lr``,
   momentum 0.9, weight decay 5e-4, learning rate times ``lr_gamma`` before
   each epoch of ``milestones`` (counted from 0);
2. **classifier stage**: the encoder frozen, the last layer is trained with
   cross-entropy on the same poisoned data by the honest clients' local SGD
   (``local.*``); with ``freeze_encoder: false`` the whole model is fine-tuned
   instead (what BackFed's implementation does, its freezing line having no effect);
3. **distance bound**, in both stages: after every SGD step the whole model
   is projected onto the L2 ball of radius ``norm_bound`` around the global
   model (:func:`project_to_ball_`; the authors' ``s_norm`` = 5 with their
   ``diff_privacy`` switches on). SupCon sees only normalised features, so
   without the bound their scale grows freely, the classifier stage starts at
   a huge cross-entropy and the update explodes.

The update sent is the whole model's change (so its norm is at most
``norm_bound``). Defaults are the authors' CIFAR-10 pixel-trigger
configuration (10 contrastive epochs, learning rate 0.005, decay 0.1 at their
epochs 3, 5, 7, 9, temperature 0.07, target weight 6, bound 5). Deviation: the
authors' classifier stage has its own optimiser (learning rate 0.001 for
CIFAR-10, 3 epochs, step decay); here it is the round's local plan, its
learning rate replaced by ``classifier_lr`` when set. Needs a
model whose last layer is a ``Linear`` classifier in an ``nn.Sequential``
(every model of the zoo but the ResNet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from fedpoison.attacks.backdoor import TriggerAttack, TriggerParams
from fedpoison.attacks.base import AttackKind, Knowledge, MaliciousTraining
from fedpoison.attacks.registry import register_attack
from fedpoison.errors import ConfigError
from fedpoison.models.paramspec import ParamSpec
from fedpoison.training.local import LocalPlan, batch_schedule, sgd_step_


class ChameleonParams(TriggerParams):
    """Parameters of ``chameleon``: the backdoor trigger plus the contrastive stage."""

    #: Epochs of supervised-contrastive training of the encoder (Chameleon: 10).
    contrastive_epochs: int = Field(10, ge=1)
    #: Learning rate of the contrastive stage (the authors' CIFAR-10 pixel-trigger setting: 0.005).
    contrastive_lr: float = Field(0.005, gt=0.0)
    #: Epochs (counted from 0) before which the learning rate is multiplied by ``lr_gamma``; 2, 4, 6, 8 is
    #: the authors' schedule (their MultiStepLR milestones 3, 5, 7, 9, stepped at the start of each epoch).
    milestones: list[int] = Field(default_factory=lambda: [2, 4, 6, 8])
    #: Learning-rate decay factor at each milestone (the authors' CIFAR-10 setting: 0.1).
    lr_gamma: float = Field(0.1, gt=0.0, le=1.0)
    #: Temperature of the contrastive loss (Chameleon / SupCon: 0.07).
    temperature: float = Field(0.07, gt=0.0)
    #: Weight of target-class anchors in the contrastive loss (the authors' contrastive_loss_scale_weight: 6).
    target_weight: float = Field(6.0, gt=0.0)
    #: Mini-batch size of the contrastive stage.
    contrastive_batch_size: int = Field(64, ge=2)
    #: Train only the last layer after the contrastive stage (the paper); ``false`` fine-tunes the whole
    #: model with cross-entropy instead (what BackFed's implementation ends up doing).
    freeze_encoder: bool = True
    #: Radius of the L2 ball around the global model that the malicious model is projected back onto after
    #: every SGD step of both stages (the authors' ``s_norm``: 5); ``null`` leaves it unbounded.
    norm_bound: float | None = Field(5.0, gt=0.0)
    #: Learning rate of the classifier stage; ``null`` uses the round's ``local.lr`` (the authors train this
    #: stage with its own rate: 0.001 on CIFAR-10, 0.01 on EMNIST).
    classifier_lr: float | None = Field(None, gt=0.0)


def supcon_loss(features: Tensor, labels: Tensor, *, temperature: float, target: int | None = None,
                target_weight: float = 1.0) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) with Chameleon's weight on target-class anchors.

    .. math::

        \\mathcal{L} = \\frac{1}{N} \\sum_i -\\frac{w_i}{|P(i)|} \\sum_{p \\in P(i)}
        \\log \\frac{\\exp(z_i \\cdot z_p / \\tau)}{\\sum_{a \\ne i} \\exp(z_i \\cdot z_a / \\tau)}

    over L2-normalised features :math:`z`, with :math:`P(i)` the other samples
    of :math:`i`'s label, :math:`w_i` = ``target_weight`` for anchors labelled
    ``target`` and 1 otherwise; anchors with no positive add 0.
    """
    z = F.normalize(features, dim=1)
    n = len(labels)
    logits = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positive.sum(1)
    per_anchor = -torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1) / count.clamp_min(1)
    weight = torch.ones(n, device=z.device)
    if target is not None:
        weight = torch.where(labels == target, torch.full_like(weight, target_weight), weight)
    return (weight * per_anchor).mean()


def project_to_ball_(params: Sequence[Tensor], anchor: Sequence[Tensor], bound: float) -> float:
    """Project ``params`` in place onto the L2 ball of radius ``bound`` around ``anchor``; return the distance.

    The distance is taken over all the tensors together (the whole model):
    when it exceeds ``bound`` every difference ``p - a`` is scaled by
    ``bound / distance``. Returns the distance before the projection.
    """
    with torch.no_grad():
        dist = float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p - a) for p, a in zip(params, anchor, strict=True)])))
        if dist > bound:
            scale = bound / dist
            for p, a in zip(params, anchor, strict=True):
                p.copy_(a + (p - a) * scale)
    return dist


def split_classifier(model: nn.Module, what: str = "attack 'chameleon'") -> tuple[nn.Module, nn.Linear]:
    """``(encoder, classifier)`` views of an ``nn.Sequential`` ending in a ``Linear`` layer."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ConfigError(f"{what}: expected a model that is an nn.Sequential ending in a Linear classifier "
                          f"(e.g. model.name=cnn28 or mlp), got {type(model).__name__}")
    return model[:-1], model[-1]


def contrastive_stage(
    model: nn.Module, spec: ParamSpec, global_params: Tensor, x: Tensor, y: Tensor, params: ChameleonParams, *,
    target: int, generator: torch.Generator,
) -> list[float]:
    """Train ``model``'s encoder in place (loaded from ``global_params``); return each epoch's mean loss.

    After every step the whole model is projected onto the ball of radius
    ``params.norm_bound`` around the global model (:func:`project_to_ball_`).
    A model without an encoder (one linear layer, e.g. ``logreg``) has no
    features to shape: the stage does nothing and returns no losses, and the
    attack is the classifier stage alone.
    """
    spec.load_(model, global_params)
    encoder, _ = split_classifier(model)
    every = list(model.parameters())
    anchor = list(spec.unflatten(global_params).values())  # views, in parameters() order
    enc_params = list(encoder.parameters())
    if not enc_params:
        return []
    bufs: list[Tensor | None] = [None] * len(enc_params)
    model.train()
    lr, losses = params.contrastive_lr, []
    for epoch in range(params.contrastive_epochs):
        if epoch in params.milestones:
            lr *= params.lr_gamma
        total, steps = 0.0, 0
        for pos in batch_schedule(len(y), LocalPlan(epochs=1, batch_size=params.contrastive_batch_size), generator):
            if len(pos) < 2:
                continue
            loss = supcon_loss(encoder(x[pos]), y[pos], temperature=params.temperature, target=target,
                               target_weight=params.target_weight)
            grads = torch.autograd.grad(loss, enc_params)
            with torch.no_grad():
                for j, (p, g) in enumerate(zip(enc_params, grads, strict=True)):
                    bufs[j] = sgd_step_(p, g, bufs[j], lr=lr, momentum=0.9, weight_decay=5e-4)
            if params.norm_bound is not None:
                project_to_ball_(every, anchor, params.norm_bound)
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(steps, 1))
    return losses


def classifier_stage(model: nn.Module, x: Tensor, y: Tensor, plan: LocalPlan, generator: torch.Generator, *,
                     freeze_encoder: bool = True, anchor: list[Tensor] | None = None,
                     norm_bound: float | None = None) -> float:
    """Train ``model`` with cross-entropy by local SGD (``plan``), in place: the last layer only, or all of it.

    With ``anchor`` (the global model's parameters, in ``model.parameters()``
    order) and ``norm_bound``, the whole model is projected onto the ball of
    that radius around ``anchor`` after every step. Returns the mean batch loss.
    """
    encoder, head = split_classifier(model)
    trained = list(head.parameters()) if freeze_encoder else list(model.parameters())
    bufs: list[Tensor | None] = [None] * len(trained)
    steps = batch_schedule(len(y), plan, generator)
    total = 0.0
    for pos in steps:
        if freeze_encoder:
            with torch.no_grad():
                feats = encoder(x[pos])
            logits = head(feats)
        else:
            logits = model(x[pos])
        loss = F.cross_entropy(logits, y[pos])
        grads = torch.autograd.grad(loss, trained)
        with torch.no_grad():
            for j, (p, g) in enumerate(zip(trained, grads, strict=True)):
                bufs[j] = sgd_step_(p, g, bufs[j], lr=plan.lr, momentum=plan.momentum,
                                    weight_decay=plan.weight_decay)
        if anchor is not None and norm_bound is not None:
            project_to_ball_(list(model.parameters()), anchor, norm_bound)
        total += float(loss.detach())
    return total / max(len(steps), 1)


@register_attack(
    "chameleon",
    description="Chameleon: supervised-contrastive encoder training pulls poisoned features to the target class.",
    params=ChameleonParams,
    reference=(
        "Dai & Li 2023, Chameleon: Adapting to Peer Images for Planting Durable Backdoors in Federated "
        "Learning (ICML)."
    ),
    variant=(
        "BadNets trigger on poison_fraction samples; encoder (no projection head) trained with SupCon on "
        "normalised features (target anchors weighted target_weight) for contrastive_epochs with SGD + step "
        "decay, then the last Linear layer alone with cross-entropy by the round's local SGD (the authors use "
        "their own classifier-stage optimiser); after every step of both stages the model is projected onto "
        "the L2 ball of radius norm_bound around the global model (the authors' s_norm); the whole model's "
        "change is sent; defaults from the authors' CIFAR-10 pixel-trigger configuration"
    ),
)
class Chameleon(TriggerAttack):
    """Chameleon's two-stage malicious training."""

    kind = AttackKind.DATA
    knowledge = Knowledge.LOCAL
    owns_training = True
    params: ChameleonParams

    def train(self, job: MaliciousTraining) -> tuple[Tensor, float]:
        """Train the encoder contrastively on the poisoned data, then the classifier; return the model's change."""
        model = job.model  # the loop's scratch copy of the architecture
        contrastive_stage(model, job.spec, job.global_params, job.x, job.y, self.params, target=self._target,
                          generator=job.generator)
        anchor = list(job.spec.unflatten(job.global_params).values())  # views, in parameters() order
        plan = job.plan or LocalPlan()
        if self.params.classifier_lr is not None:
            plan = dataclasses.replace(plan, lr=self.params.classifier_lr)
        loss = classifier_stage(model, job.x, job.y, plan, job.generator,
                                freeze_encoder=self.params.freeze_encoder, anchor=anchor,
                                norm_bound=self.params.norm_bound)
        return job.spec.flatten(model).sub_(job.global_params), loss
