"""Chameleon: contrastive training pulls poisoned features toward the target class.

Reference: Dai and Li, 'Chameleon: Adapting to Peer Images for Planting
Durable Backdoors in Federated Learning', ICML 2023.

Exact variant, checked against the authors' code (``ybdai7/Chameleon-durable-backdoor``,
``training.py``, run as their ``commands.sh`` runs it). Each attacking client
poisons ``poison_fraction`` of its samples with the BadNets trigger of
``backdoor`` (same keys) and relabels them to ``target_class``, then:

1. **contrastive stage**: the model's encoder (every layer but the last, a
   ``Linear`` classifier; no projection head, as in the authors' code) is
   trained from the global model for ``contrastive_epochs`` epochs with the
   supervised contrastive loss :func:`supcon_loss` on the L2-normalised
   features, temperature ``temperature``: every sample of a label is a
   positive of every other, so the poisoned images (labelled ``target_class``)
   are pulled toward the target class's clean images and pushed from all the
   others, their original class's images included; anchors of the target
   class weigh ``target_weight`` times more. SGD with ``contrastive_lr``,
   momentum 0.9, weight decay 5e-4, learning rate times ``lr_gamma`` from each
   epoch of ``milestones`` (counted from 0) on;
2. **classifier stage**, with its own optimiser as the authors': the encoder
   frozen, the last layer (the global model's, untouched by stage 1) is
   trained with cross-entropy on the same poisoned data for
   ``classifier_epochs`` epochs, batches of ``classifier_batch_size``,
   learning rate ``classifier_lr`` times ``classifier_gamma`` from each epoch
   of ``classifier_milestones`` on, momentum 0.9, weight decay 5e-4. With
   ``freeze_encoder: false`` the whole model is fine-tuned instead (what
   BackFed's implementation does, its freezing line having no effect);
3. **distance bound**, in both stages: after every SGD step the whole model
   is projected onto the L2 ball of radius ``norm_bound`` around the global
   model (:func:`project_to_ball_`; the authors' ``s_norm`` = 5 with their
   ``diff_privacy`` switches on).

The update sent is the whole model's change, unscaled (the authors'
``scale_weights`` is 1), so its norm is at most ``norm_bound``. Defaults are
the authors' CIFAR-10 pixel-trigger run: 10 contrastive epochs at 0.005, decay
0.1 at their epochs 3, 5, 7, 9, temperature 0.07, target weight 6, bound 5;
classifier stage 3 epochs at 0.01 (their command-line default, which their
script lays over the YAML file's 0.001), decay 0.005 from the third epoch.
Deviations: the authors' attacker holds a sample of 25 batches of 64 images
from the whole training set and stamps the trigger (plus Gaussian noise of
standard deviation 0.01) on 7 fresh images of every batch; here the client's
own data, with the ``poison_fraction`` (0.5) shared by every trigger attack,
poisoned once. Their classifier stage also stops early once the backdoor loss
on their test images is below 1e-4; here it runs its epochs. Needs a
model whose last layer is a ``Linear`` classifier in an ``nn.Sequential``
(every model of the zoo but the ResNet).

On the zoo's models, which have no BatchNorm in the encoder (unlike the
authors' ResNet-18), the contrastive stage collapses the features onto one
shared direction within a few SGD steps and the attack plants no backdoor:
with half of every batch relabelled to the target, all-equal features are a
stationary point of :func:`supcon_loss` whose value is no higher than that of
a working backdoor's features (measured in docs/attacks.md, "What causes the
collapse").
"""

from __future__ import annotations

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
    #: Epochs of the classifier stage (the authors' ``retrain_poison``: 3).
    classifier_epochs: int = Field(3, ge=1)
    #: Learning rate of the classifier stage: the authors' ``poison_lr``, 0.01 (their command-line default,
    #: which their script lays over the 0.001 of the CIFAR-10 YAML file).
    classifier_lr: float = Field(0.01, gt=0.0)
    #: Epochs (counted from 0) before which the classifier stage's learning rate is multiplied by
    #: ``classifier_gamma``; ``[2]`` is the authors' schedule (their milestones 3 and 5, stepped at the start of
    #: each of their 3 epochs: the third epoch runs at the decayed rate).
    classifier_milestones: list[int] = Field(default_factory=lambda: [2])
    #: Decay factor of the classifier stage's learning rate (the authors' ``lr_gamma``: 0.005).
    classifier_gamma: float = Field(0.005, gt=0.0, le=1.0)
    #: Mini-batch size of the classifier stage (the authors use one batch size, 64, for both stages).
    classifier_batch_size: int = Field(64, ge=1)


def milestone_lr(lr: float, epoch: int, milestones: Sequence[int], gamma: float) -> float:
    """Learning rate of ``epoch`` (from 0): ``lr`` times ``gamma`` per distinct milestone at or before it.

    Equivalent to PyTorch's ``MultiStepLR`` stepped at the start of each epoch
    with milestones shifted by one (the authors' 3, 5 become 2, 4 here).

    >>> milestone_lr(1.0, 1, [2, 4], 0.1), milestone_lr(1.0, 2, [2, 4], 0.1), milestone_lr(1.0, 5, [2, 4], 0.1)
    (1.0, 0.1, 0.010000000000000002)
    """
    return lr * gamma ** sum(1 for m in set(milestones) if m <= epoch)


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
    losses = []
    for epoch in range(params.contrastive_epochs):
        lr = milestone_lr(params.contrastive_lr, epoch, params.milestones, params.lr_gamma)
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


def classifier_stage(model: nn.Module, x: Tensor, y: Tensor, params: ChameleonParams, generator: torch.Generator,
                     *, anchor: list[Tensor] | None = None) -> float:
    """Train ``model`` with cross-entropy, in place: the last layer only (``params.freeze_encoder``) or all of it.

    The authors' classifier stage: ``params.classifier_epochs`` epochs of SGD
    over fresh permutations in batches of ``params.classifier_batch_size``,
    learning rate ``params.classifier_lr`` times ``params.classifier_gamma``
    from each epoch of ``params.classifier_milestones`` on, momentum 0.9,
    weight decay 5e-4. With ``anchor`` (the global model's parameters, in
    ``model.parameters()`` order) and ``params.norm_bound``, the whole model is
    projected onto the ball of that radius around ``anchor`` after every step.
    Returns the mean batch loss.
    """
    encoder, head = split_classifier(model)
    trained = list(head.parameters()) if params.freeze_encoder else list(model.parameters())
    every = list(model.parameters())
    bufs: list[Tensor | None] = [None] * len(trained)
    total, count = 0.0, 0
    for epoch in range(params.classifier_epochs):
        lr = milestone_lr(params.classifier_lr, epoch, params.classifier_milestones, params.classifier_gamma)
        for pos in batch_schedule(len(y), LocalPlan(epochs=1, batch_size=params.classifier_batch_size), generator):
            if params.freeze_encoder:
                with torch.no_grad():
                    feats = encoder(x[pos])
                logits = head(feats)
            else:
                logits = model(x[pos])
            loss = F.cross_entropy(logits, y[pos])
            grads = torch.autograd.grad(loss, trained)
            with torch.no_grad():
                for j, (p, g) in enumerate(zip(trained, grads, strict=True)):
                    bufs[j] = sgd_step_(p, g, bufs[j], lr=lr, momentum=0.9, weight_decay=5e-4)
            if anchor is not None and params.norm_bound is not None:
                project_to_ball_(every, anchor, params.norm_bound)
            total, count = total + float(loss.detach()), count + 1
    return total / max(count, 1)


@register_attack(
    "chameleon",
    description="Chameleon: supervised-contrastive encoder training pulls poisoned features to the target class.",
    params=ChameleonParams,
    reference=(
        "Dai & Li 2023, Chameleon: Adapting to Peer Images for Planting Durable Backdoors in Federated "
        "Learning (ICML)."
    ),
    variant=(
        "BadNets trigger on poison_fraction of the client's own samples (the authors: 7 of every 64 of a "
        "sampled secret set); encoder (no projection head) trained with SupCon on normalised features (target "
        "anchors weighted target_weight) for contrastive_epochs with SGD + step decay, then the last Linear "
        "layer alone with cross-entropy by the authors' own classifier-stage SGD (classifier_epochs at "
        "classifier_lr, step decay); after every step of both stages the model is projected onto the L2 ball "
        "of radius norm_bound around the global model (the authors' s_norm); the whole model's change is "
        "sent, unscaled; defaults from the authors' CIFAR-10 pixel-trigger run"
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
        loss = classifier_stage(model, job.x, job.y, self.params, job.generator, anchor=anchor)
        return job.spec.flatten(model).sub_(job.global_params), loss
