"""Measure what Chameleon's contrastive stage does to the features of the global model.

Runs a config up to the first attacking round, captures each attacking client's training job there, and
runs Chameleon's contrastive stage on it (in a scratch copy: the run itself is not continued), printing
for the client's samples before and after the stage: the mean cosine between two samples' L2-normalised
features (1.0: every feature points the same way), the median feature norm, and the global head's
cross-entropy and accuracy on the poisoned and on the clean samples; then the model's cross-entropy and
accuracy after the classifier stage.

Run (from the repository root, figures in docs/attacks.md):
    PYTHONPATH=src python3 examples/learned_backdoors/chameleon_collapse.py
    PYTHONPATH=src python3 examples/learned_backdoors/chameleon_collapse.py \
        --variant "contrastive_epochs=3 milestones=[]" --variant "contrastive_epochs=3 milestones=[] target_weight=1"

Each ``--variant`` (space-separated Chameleon parameters, KEY=VALUE) is measured on the same captured jobs;
with none, the config's own attack settings. ``--run-set KEY=VALUE`` changes the run (e.g.
``attack.poison_fraction=0.109375`` for the authors' share of poisoned images).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch
import yaml
from torch.nn import functional as F

from fedpoison.attacks import chameleon
from fedpoison.attacks.base import MaliciousTraining
from fedpoison.simulation.loop import run


class _Captured(Exception):
    """Raised once every attacking client of the round has handed over its job."""


def capture_jobs(config: str, overrides: list[str]) -> list[MaliciousTraining]:
    """The attacking clients' jobs of the first attacking round of ``config`` (a Chameleon run)."""
    jobs: list[MaliciousTraining] = []
    original = chameleon.Chameleon.train

    def grab(self: chameleon.Chameleon, job: MaliciousTraining) -> tuple[torch.Tensor, float]:
        if jobs and job.round != jobs[0].round:
            raise _Captured
        jobs.append(dataclasses.replace(job, global_params=job.global_params.clone()))  # the loop moves on
        return original(self, job)

    chameleon.Chameleon.train = grab  # type: ignore[method-assign]
    try:
        run(config, overrides=overrides, progress=False)
    except _Captured:
        pass
    finally:
        chameleon.Chameleon.train = original  # type: ignore[method-assign]
    return jobs


def feature_report(job: MaliciousTraining, model: torch.nn.Module) -> dict[str, float]:
    """Mean pairwise cosine, median norm, and the head's cross-entropy / accuracy on poisoned and clean samples."""
    encoder, head = chameleon.split_classifier(model)
    poisoned = job.y != job.clean_y
    with torch.no_grad():
        f = encoder(job.x)
        z = F.normalize(f, dim=1)
        logits = head(f)
        out = {"mean_cosine": float((z @ z.T).mean()), "feature_norm": float(f.norm(dim=1).median()),
               "ce": float(F.cross_entropy(logits, job.y))}
        for name, m in (("poisoned", poisoned), ("clean", ~poisoned)):
            out[f"acc_{name}"] = float((logits[m].argmax(1) == job.y[m]).float().mean())
    return out


def main() -> None:
    """Parse the arguments, capture the jobs, run the contrastive stage on each and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/learned_backdoors/fmnist_chameleon.yaml")
    parser.add_argument("--run-set", action="append", default=[], help="override of the run (KEY=VALUE)")
    parser.add_argument("--variant", action="append", default=[],
                        help="space-separated Chameleon parameters for the stage (KEY=VALUE ...)")
    args = parser.parse_args()
    jobs = capture_jobs(args.config, [*args.run_set, "eval.every=1000"])
    with open(args.config) as f:
        base: dict[str, Any] = dict(yaml.safe_load(f)["attack"])
    for run_set in args.run_set:
        key, value = run_set.split("=", 1)
        if key.startswith("attack."):
            base[key.removeprefix("attack.")] = yaml.safe_load(value)
    names = set(chameleon.ChameleonParams.model_fields)
    for variant in args.variant or [""]:
        attack = dict(base)
        for item in variant.split():
            key, value = item.split("=", 1)
            attack[key] = yaml.safe_load(value)
        params = chameleon.ChameleonParams(**{k: v for k, v in attack.items() if k in names})
        print(f"== {variant or 'the config as it is'}")
        for job in jobs:
            report(job, params)


def report(job: MaliciousTraining, params: chameleon.ChameleonParams) -> None:
    """Run the contrastive stage on ``job`` from the global model and print the figures before and after."""
    model = job.model
    job.spec.load_(model, job.global_params)
    before = feature_report(job, model)
    losses = chameleon.contrastive_stage(model, job.spec, job.global_params, job.x, job.y, params,
                                         target=params.target_class, generator=torch.Generator().manual_seed(0))
    after = feature_report(job, model)
    dist = float((job.spec.flatten(model) - job.global_params).norm())
    print(f"round {job.round}, client {job.client_id}: {len(job.y)} samples, "
          f"{int((job.y != job.clean_y).sum())} poisoned; distance to the global model {dist:.2f}")
    print("  loss per epoch: " + ", ".join(f"{x:.2f}" for x in losses))
    for key in before:
        print(f"  {key:14s} {before[key]:9.3f} -> {after[key]:9.3f}")
    anchor = list(job.spec.unflatten(job.global_params).values())
    chameleon.classifier_stage(model, job.x, job.y, params, torch.Generator().manual_seed(1), anchor=anchor)
    with torch.no_grad():
        out = model(job.x)
    print(f"  after the classifier stage: cross-entropy {float(F.cross_entropy(out, job.y)):.3f}, accuracy "
          f"{float((out.argmax(1) == job.y).float().mean()):.3f} on the client's (poisoned) data")

if __name__ == "__main__":
    main()
