"""Test the explanations of why Chameleon's contrastive stage collapses cnn28's features.

Captures the attacking clients' jobs in the first attacking round of the chameleon row of
``examples/attacks2020/backdoors_fedavg_20pct.yaml`` (``fmnist_chameleon.yaml`` with 4 attackers and the
5 x 5 patch), then, for each case below and each client, runs the contrastive stage from the global model and
prints: the mean cosine between two samples' normalised features before and after, the SGD step at which it
first exceeds 0.9, the median feature norm, the share of dead feature units (zero on every sample of the
client) and the mean number of active units per sample, the mean loss of the first and last epoch, the
distance to the global model, and after the classifier stage the model's accuracy and attack success rate on
the first 2,000 test images. Cases (one run each, on the same jobs):

``defaults``
    the attack as it is (:func:`fedpoison.attacks.chameleon.contrastive_stage`);
``momentum0``
    SGD without momentum; ``bound1.44``: ``norm_bound`` 1.44 (the median honest update's norm);
``frozen_bias``
    the encoder's biases left at the global model's;
``iid``, ``iid_share``
    the client's data replaced by 600 training images drawn uniformly (all classes, as the authors'
    attacker's), half of them poisoned / 7 of 64 (the authors' share);
``projection_head``
    the loss taken on a two-layer projection head (128-128-128, ReLU) trained with the encoder;
``batchnorm``
    (diagnosis only: the attack cannot change the model) a ``BatchNorm1d`` inserted before the encoder's last
    ReLU, in training mode, its scale and shift set to the per-unit standard deviation and mean of that
    layer's input on the client's samples (so the model computes about what it did); a client whose
    last batch would hold one sample drops that sample.

Then, with ``--losses``, the mean contrastive loss (the attack's settings) over one epoch of the client's
batches for: the global model's features, fully collapsed features (all equal), one-hot features of the
labels (every class its own orthogonal direction), and the features of the global model trained by plain
``backdoor`` on the same poisoned data (2 epochs of batch 32 at 0.05, momentum 0.9; that model's test
accuracy, ASR and distance to the global model are printed too).

Run (from the repository root; figures in docs/attacks.md):
    PYTHONPATH=src python3 examples/learned_backdoors/chameleon_diagnosis.py --losses
    PYTHONPATH=src python3 examples/learned_backdoors/chameleon_diagnosis.py --case none --losses
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedpoison.attacks import chameleon as ch
from fedpoison.attacks.backdoor import build_trigger, stamp
from fedpoison.attacks.base import MaliciousTraining
from fedpoison.config import DatasetSection
from fedpoison.data import load_dataset
from fedpoison.models import ParamSpec
from fedpoison.simulation.loop import run
from fedpoison.training.local import LocalPlan, batch_schedule, sgd_step_

CONFIG = "examples/learned_backdoors/fmnist_chameleon.yaml"
OVERRIDES = ["attack.fraction=0.2", "attack.trigger=patch", "attack.trigger_size=5", "eval.every=1000"]
CASES = ["none", "defaults", "momentum0", "bound1.44", "frozen_bias", "iid", "iid_share", "projection_head", "batchnorm"]


class _Captured(Exception):
    """Raised once every attacking client of the round has handed over its job."""


def capture(overrides: list[str]) -> list[MaliciousTraining]:
    """The attacking clients' jobs of the first attacking round (their own training is skipped)."""
    jobs: list[MaliciousTraining] = []
    original = ch.Chameleon.train

    def grab(self: ch.Chameleon, job: MaliciousTraining) -> tuple[Tensor, float]:
        if jobs and job.round != jobs[0].round:
            raise _Captured
        jobs.append(dataclasses.replace(job, global_params=job.global_params.clone()))
        return torch.zeros_like(job.global_params), 0.0

    ch.Chameleon.train = grab  # type: ignore[method-assign]
    try:
        run(CONFIG, overrides=[*OVERRIDES, *overrides], progress=False)
    except _Captured:
        pass
    finally:
        ch.Chameleon.train = original  # type: ignore[method-assign]
    return jobs


def stats(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Mean pairwise cosine, median norm, dead-unit share and mean active units of the encoder's features."""
    with torch.no_grad():
        f = model[:-1](x)
    z = F.normalize(f, dim=1)
    return {"cos": float((z @ z.T).mean()), "norm": float(f.norm(dim=1).median()),
            "dead": float(((f > 0).sum(0) == 0).float().mean()), "active": float((f > 0).float().sum(1).mean())}


def stage(model: nn.Module, anchor: list[Tensor], x: Tensor, y: Tensor, params: ch.ChameleonParams, target: int, *,
          momentum: float = 0.9, frozen_bias: bool = False, head: nn.Module | None = None) -> tuple[list[float], int]:
    """The contrastive stage with the cases' changes; returns the epochs' mean losses and the collapse step."""
    encoder = model[:-1]
    named = [(n, p) for n, p in encoder.named_parameters() if not (frozen_bias and n.endswith("bias"))]
    trained = [p for _, p in named] + (list(head.parameters()) if head is not None else [])
    every = list(model.parameters())
    bufs: list[Tensor | None] = [None] * len(trained)
    losses, step, collapsed = [], 0, -1
    gen = torch.Generator().manual_seed(0)
    for epoch in range(params.contrastive_epochs):
        lr = ch.milestone_lr(params.contrastive_lr, epoch, params.milestones, params.lr_gamma)
        total, n = 0.0, 0
        for pos in batch_schedule(len(y), LocalPlan(epochs=1, batch_size=params.contrastive_batch_size), gen):
            if len(pos) < 2:
                continue
            f = encoder(x[pos])
            loss = ch.supcon_loss(head(f) if head is not None else f, y[pos], temperature=params.temperature,
                                  target=target, target_weight=params.target_weight)
            grads = torch.autograd.grad(loss, trained)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(trained, grads, strict=True)):
                    bufs[i] = sgd_step_(p, g, bufs[i], lr=lr, momentum=momentum, weight_decay=5e-4)
            if params.norm_bound is not None:
                ch.project_to_ball_(every, anchor, params.norm_bound)
            step += 1
            if collapsed < 0 and stats(model, x)["cos"] > 0.9:
                collapsed = step
            total, n = total + float(loss.detach()), n + 1
        losses.append(total / max(n, 1))
    return losses, collapsed


def with_batchnorm(model: nn.Module, x: Tensor) -> nn.Module:
    """``model`` with a BatchNorm1d before its last ReLU that reproduces that layer's per-unit mean / std on ``x``."""
    with torch.no_grad():
        h = model[:-2](x)
    bn = nn.BatchNorm1d(h.shape[1])
    with torch.no_grad():
        bn.weight.copy_(h.std(0) + 1e-3)
        bn.bias.copy_(h.mean(0))
    return nn.Sequential(*model[:-2], bn, *model[-2:]).train()


def poison(x: Tensor, y: Tensor, fraction: float, trigger: object, target: int) -> tuple[Tensor, Tensor]:
    """``round(fraction * n)`` samples (a fixed draw) stamped with ``trigger`` and relabelled ``target``."""
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))[: round(fraction * len(y))]
    x, y = x.clone(), y.clone()
    x[idx] = stamp(x[idx], trigger)  # type: ignore[arg-type]
    y[idx] = target
    return x, y


def main() -> None:
    """Capture the jobs, run every case on each and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", action="append", choices=CASES,
                        help="cases to run (default: all; 'none' runs none, e.g. with --losses)")
    parser.add_argument("--losses", action="store_true", help="also compare the loss of four feature maps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    jobs = capture([f"seed={args.seed}"])
    ds = load_dataset(DatasetSection(name="fashion-mnist", limit=6000))
    xt, yt = ds.x_test[:2000], ds.y_test[:2000]
    params = ch.ChameleonParams(trigger="patch", trigger_size=5)
    trigger = build_trigger(params, tuple(ds.x_test.shape[1:]))
    target = params.target_class

    def test(model: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            acc = float((model(xt).argmax(1) == yt).float().mean())
            asr = float((model(stamp(xt[yt != target], trigger)).argmax(1) == target).float().mean())
        return acc, asr

    for case in args.case or CASES[1:]:
        if case == "none":
            continue
        print(f"== {case}")
        for job in jobs:
            p = params.model_copy(update={"norm_bound": 1.44}) if case == "bound1.44" else params
            x, y = job.x, job.y
            if case in ("iid", "iid_share"):
                pick = torch.randperm(len(ds.y_train), generator=torch.Generator().manual_seed(7))[:600]
                x, y = poison(ds.x_train[pick], ds.y_train[pick], 0.5 if case == "iid" else 7 / 64, trigger, target)
            model = job.model
            job.spec.load_(model, job.global_params)
            anchor_flat = job.global_params
            if case == "batchnorm":
                if len(y) % params.classifier_batch_size == 1:  # BatchNorm cannot train on a batch of one
                    x, y = x[:-1], y[:-1]
                model = with_batchnorm(model, job.clean_x)
                bn, cut = model[-3], job.spec.dim - sum(q.numel() for q in model[-1].parameters())
                anchor_flat = torch.cat([job.global_params[:cut], bn.weight.detach(), bn.bias.detach(),
                                         job.global_params[cut:]])
            spec = ParamSpec.of(model)
            anchor = list(spec.unflatten(anchor_flat).values())
            before = stats(model, x)
            head = None
            if case == "projection_head":
                torch.manual_seed(3)
                head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))
            losses, collapsed = stage(model, anchor, x, y, p, target, momentum=0.0 if case == "momentum0" else 0.9,
                                      frozen_bias=case == "frozen_bias", head=head)
            after = stats(model, x)
            dist = float((spec.flatten(model) - anchor_flat).norm())
            ch.classifier_stage(model, x, y, p, torch.Generator().manual_seed(1), anchor=anchor)
            acc, asr = test(model)
            print(f"  client {job.client_id:2d} ({len(y)} samples): cosine {before['cos']:.2f} -> {after['cos']:.3f}"
                  f" (> 0.9 at step {collapsed}), norm {before['norm']:.0f} -> {after['norm']:.0f}, dead units "
                  f"{before['dead']:.2f} -> {after['dead']:.2f}, active {before['active']:.0f} -> "
                  f"{after['active']:.0f}, loss {losses[0]:.1f} -> {losses[-1]:.1f}, distance {dist:.2f}; after "
                  f"the classifier stage: test accuracy {acc:.3f}, ASR {asr:.3f}", flush=True)
    if args.losses:
        print("== mean contrastive loss over one epoch of the client's batches")
        for job in jobs:
            print(f"  client {job.client_id:2d}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in feature_losses(job, params, target).items()), flush=True)
            acc, asr = test(job.model)  # left trained by plain backdoor
            print(f"    the plain-backdoor model: test accuracy {acc:.3f}, ASR {asr:.3f}, distance "
                  f"{float((job.spec.flatten(job.model) - job.global_params).norm()):.2f}", flush=True)


def feature_losses(job: MaliciousTraining, params: ch.ChameleonParams, target: int) -> dict[str, float]:
    """The contrastive loss of the global, collapsed, plain-backdoor and one-hot features on the same batches."""
    x, y = job.x, job.y

    def mean_loss(features: Callable[[Tensor, Tensor], Tensor]) -> float:
        gen, out = torch.Generator().manual_seed(11), []
        for pos in batch_schedule(len(y), LocalPlan(epochs=1, batch_size=params.contrastive_batch_size), gen):
            if len(pos) > 1:
                with torch.no_grad():
                    out.append(float(ch.supcon_loss(features(x[pos], y[pos]), y[pos], temperature=params.temperature,
                                                    target=target, target_weight=params.target_weight)))
        return sum(out) / len(out)

    model = job.model
    job.spec.load_(model, job.global_params)
    res = {"global": mean_loss(lambda xb, yb: model[:-1](xb)),
           "collapsed": mean_loss(lambda xb, yb: torch.ones(len(yb), 8)),
           "one-hot labels": mean_loss(lambda xb, yb: F.one_hot(yb, 10).float())}
    trained = list(model.parameters())
    bufs: list[Tensor | None] = [None] * len(trained)
    for pos in batch_schedule(len(y), LocalPlan(epochs=2, batch_size=32), torch.Generator().manual_seed(0)):
        grads = torch.autograd.grad(F.cross_entropy(model(x[pos]), y[pos]), trained)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(trained, grads, strict=True)):
                bufs[i] = sgd_step_(p, g, bufs[i], lr=0.05, momentum=0.9, weight_decay=0.0)
    res["plain backdoor"] = mean_loss(lambda xb, yb: model[:-1](xb))
    return res


if __name__ == "__main__":
    main()
