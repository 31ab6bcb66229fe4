"""Certification after the last round, for rules that certify their final model (``crfl``).

The rule carries the smoothing settings; this module supplies what only the
run knows: the test inputs, a forward pass under given parameters, and the
constants of the attack the certificate covers (:func:`threat_of`). The
results go to ``summary.json`` (``crfl_*`` keys) and, per test input, to
``certification.csv``. The smoothed classifier (the vote of the noisy copies)
is what CRFL deploys, so with a backdoor attack its attack success on the
backdoored certified inputs is reported too (``crfl_smoothed_attack_success_rate``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fedpoison.defenses.crfl import CRFL, CRFLThreat, certify_votes, smoothed_backdoor, smoothed_votes
from fedpoison.seeding import generator
from fedpoison.simulation.federation import Federation
from fedpoison.training import evaluate

#: Radii at which the summary reports certified accuracy (besides the mean and median radius).
REPORT_RADII = (0.0, 0.001, 0.01)


def threat_of(fed: Federation) -> CRFLThreat:
    """The attack a CRFL certificate of this run covers, read from the run's config and clients.

    :math:`R` is the number of malicious clients (1 in a run without attack, so
    the certificate covers one attacker), :math:`p_i` their share of all
    samples, :math:`\\gamma` the attack's ``scale`` (1 without one),
    :math:`q_B/n_B` its ``poison_fraction`` (1 without one: every sample),
    :math:`\\eta` and :math:`\\tau` the local learning rate and the mean local
    steps per round, and :math:`T - t_{adv}` the rounds from the attack's
    ``start_round`` to the end.
    """
    cfg = fed.cfg
    rule = fed.defense.rule
    lipschitz = rule.params.crfl_lipschitz if isinstance(rule, CRFL) else math.sqrt(17.0)
    sizes = fed.sizes.double()
    share = sizes / sizes.sum()
    if len(fed.malicious):
        attackers = len(fed.malicious)
        weight_sq = float((share[fed.malicious] ** 2).sum())
    else:
        attackers, weight_sq = 1, float(share.max() ** 2)
    params = cfg.attack.params_dict() if cfg.attack.name != "none" else {}
    steps = float(sum(fed.plan.num_steps(int(n)) for n in fed.sizes.tolist()) / max(len(fed.sizes), 1))
    return CRFLThreat(
        attackers=attackers, weight_sq_sum=weight_sq, scale=float(params.get("scale", 1.0)), lr=cfg.local.lr,
        local_steps=steps, poison_ratio=float(params.get("poison_fraction", 1.0)), lipschitz=lipschitz,
        rounds_after_attack=max(cfg.rounds - cfg.attack.start_round, 1),
    )


def certify_final(fed: Federation, params: Tensor) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Certify the final model when the run's rule certifies; ``({}, None)`` otherwise.

    Returns the summary entries and the per-input table (``index``, ``label``,
    ``prediction``, ``p_a``, ``p_b``, ``radius``, ``correct``).

    When the run's attack has a trigger, the backdoored versions of the same
    inputs (those not of the target class) go through the *same* noisy copies,
    so the summary also has the smoothed classifier's attack success
    (``crfl_smoothed_attack_success_rate``), the mean over the copies
    (``crfl_copy_attack_success_rate``) and the final model's own
    (``crfl_base_attack_success_rate``) on those inputs, and the table has
    ``backdoor_prediction`` and ``backdoor_base_prediction`` (-1 for an input
    of the target class).
    """
    rule = fed.defense.rule
    if not isinstance(rule, CRFL) or rule.params.crfl_certify_inputs == 0 or not bool(torch.isfinite(params).all()):
        return {}, None
    p = rule.params
    data = fed.data
    k = min(p.crfl_certify_inputs, len(data.y_test))
    x, y = data.x_test[:k], data.y_test[:k]
    bs = fed.cfg.eval.batch_size
    # the backdoored versions of the certified inputs (those not of the target class), when the attack has a trigger
    attack = fed.attack
    target = attack.target_class if attack is not None else None
    backdoored = attack.backdoor_inputs(x, y) if attack is not None and target is not None else None
    x_bd, chosen = backdoored if backdoored is not None else (x[:0], torch.zeros(k, dtype=torch.bool))
    x_all = torch.cat([x, x_bd.to(device=x.device, dtype=x.dtype)])
    y_all = torch.cat([y, y[chosen.to(y.device)]])

    def predict(flat: Tensor) -> Tensor:
        fed.spec.load_(fed.eval_model, flat)
        preds, _ = evaluate(fed.eval_model, x_all, y_all, bs)
        return preds

    # the defense stream of "round T", the round after the last: the smoothing draws are the run's own.
    # Each noisy copy votes on the clean and the backdoored inputs alike, so both are the same smoothed classifier.
    g = generator(fed.cfg.seed, "defense", fed.cfg.rounds)
    votes_all = smoothed_votes(predict, params, sigma=p.crfl_sigma, samples=p.crfl_samples, generator=g,
                               num_classes=data.num_classes)
    votes, votes_bd = votes_all[:k], votes_all[k:]
    base = predict(params).cpu().numpy()  # the final model itself, without smoothing noise
    base_bd = base[k:] if backdoored is not None else None
    fed.spec.load_(fed.eval_model, params)  # leave the evaluation model at the final parameters
    threat = threat_of(fed)
    # rho_t of the rounds from the attack's start to the last, whose clipping contracts the attack's effect
    rounds = fed.cfg.rounds
    clips = [rule.threshold(t) for t in range(rounds - threat.rounds_after_attack, rounds)]
    cert = certify_votes(votes, y, samples=p.crfl_samples, alpha=p.crfl_alpha, sigma=p.crfl_sigma,
                         clip=clips, threat=threat)
    certified = cert.correct & (cert.radius > 0)
    radii = cert.radius[certified]
    summary: dict[str, Any] = {
        "crfl_certified_inputs": int(k),
        "crfl_samples": int(p.crfl_samples),
        "crfl_smoothed_accuracy": float(cert.correct.mean()),
        "crfl_base_accuracy": float((base[:k] == y.cpu().numpy()).mean()),
        "crfl_certified_accuracy": cert.accuracy_at(0.0),
        "crfl_mean_radius": float(radii.mean()) if len(radii) else 0.0,
        "crfl_median_radius": float(pd.Series(radii).median()) if len(radii) else 0.0,
    }
    for r in REPORT_RADII[1:]:
        summary[f"crfl_certified_accuracy_at_{r:g}"] = cert.accuracy_at(r)
    table = pd.DataFrame({"index": range(k), "label": y.cpu().numpy(), "prediction": cert.prediction,
                          "p_a": cert.p_a, "p_b": cert.p_b, "radius": cert.radius, "correct": cert.correct})
    if base_bd is not None and target is not None:
        bd = smoothed_backdoor(votes_bd, target)
        summary["crfl_backdoor_inputs"] = len(bd.prediction)
        summary["crfl_smoothed_attack_success_rate"] = bd.attack_success_rate
        summary["crfl_copy_attack_success_rate"] = bd.copy_attack_success_rate
        summary["crfl_base_attack_success_rate"] = float((base_bd == target).mean()) if len(base_bd) else math.nan
        rows = chosen.cpu().numpy()
        for name, values in (("backdoor_prediction", bd.prediction), ("backdoor_base_prediction", base_bd)):
            column = np.full(k, -1, dtype=np.int64)
            column[rows] = values
            table[name] = column
    return summary, table
