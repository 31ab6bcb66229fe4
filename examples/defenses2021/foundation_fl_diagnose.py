"""Which update FoundationFL copies each round, and what that does to the trimmed mean, without an attack.

Runs one experiment with ``defense.pre: [foundation_fl]`` in front of the trimmed mean and no attack,
and writes one JSON line per round: the client copied, the class most of its data hold, its update's
norm rank (0 = smallest) and its rank by the share of coordinates where it is the maximum or the
minimum of the n updates, the cosine of the copied update with the mean update, and the cosines of
the FoundationFL + trimmed-mean aggregate with the copied update and with the plain trimmed mean of
the same n updates. Every ``--every`` rounds it adds the test accuracy and the histogram of the
predicted classes. The last line holds the medians over round windows.

Usage (a grid file's ``base`` is used, the grid's axes are not):
  python3 examples/defenses2021/foundation_fl_diagnose.py examples/defenses2021/foundation_fl_fedsgd.yaml \
      OUT.jsonl [--seed 0] [--rounds 300] [--every 25] [--windows 0,25,100,200,300] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from typing import Any

import torch
import yaml

from fedpoison.core.order_statistics import coordinate_trimmed_mean
from fedpoison.defenses import foundation_fl as ffl
from fedpoison.plugins import load_config
from fedpoison.simulation.federation import build_federation
from fedpoison.simulation.loop import LoopState, drive
from fedpoison.training import evaluate


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--windows", default="0,25,100,200,300", help="round windows of the medians (their bounds)")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    raw = yaml.safe_load(open(args.config))
    cfg = load_config(raw.get("base", raw), [f"seed={args.seed}", f"rounds={args.rounds}", "defense.pre=[foundation_fl]",
                                             "attack.name=none", "attack.fraction=0.0", *args.sets])
    fed = build_federation(cfg)
    f = cfg.defense.f
    y = fed.data.y_train
    classes = int(y.max()) + 1
    dominant = [int(torch.bincount(y[idx].cpu(), minlength=classes).argmax()) for idx in fed.parts]
    log = open(args.out, "w")
    rows: list[dict[str, Any]] = []
    pre = ffl.FoundationFL.__call__

    def traced(self: ffl.FoundationFL, updates: torch.Tensor, weights: torch.Tensor, ctx: Any) -> Any:
        res = pre(self, updates, weights, ctx)
        x = updates.double()
        star = int(torch.argmax(ffl.extreme_scores(updates)))
        hi, lo = x.amax(0), x.amin(0)
        live = hi > lo
        at_extreme = (((x == hi) | (x == lo)) & live).double().sum(1)
        norms = x.norm(dim=1)
        both = coordinate_trimmed_mean(res.updates.double(), f)
        plain = coordinate_trimmed_mean(x, f)
        cid = int(ctx.client_ids[star])
        rec = {"round": ctx.round, "copied": cid, "copied_class": dominant[cid],
               "norm_rank": int((norms < norms[star]).sum()), "extreme_rank": int((at_extreme < at_extreme[star]).sum()),
               "cos_copied_mean": _cos(x[star], x.mean(0)), "cos_ffl_copied": _cos(both, x[star]),
               "cos_ffl_plain": _cos(both, plain), "norm_ffl_over_plain": float(both.norm() / plain.norm())}
        rows.append(rec)
        log.write(json.dumps(rec) + "\n")
        return res

    ffl.FoundationFL.__call__ = traced  # type: ignore[method-assign]

    def after(state: LoopState) -> None:
        if state.round % args.every == 0 or state.round == args.rounds:
            fed.spec.load_(fed.eval_model, state.params)
            preds, _ = evaluate(fed.eval_model, fed.data.x_test, fed.data.y_test, cfg.eval.batch_size)
            log.write(json.dumps({"eval_round": state.round,
                                  "accuracy": float((preds == fed.data.y_test).double().mean()),
                                  "predicted": torch.bincount(preds.cpu(), minlength=classes).tolist()}) + "\n")
            log.flush()

    drive(fed, LoopState(params=fed.init_params.clone()), after_round=after)
    windows = {}
    bounds = [int(b) for b in args.windows.split(",")]
    for lo, hi in itertools.pairwise(bounds):
        w = [r for r in rows if lo <= r["round"] < hi]
        if not w:
            continue
        top = statistics.mode(r["copied_class"] for r in w)
        windows[f"{lo}-{w[-1]['round']}"] = {
            "copied_class": top, "rounds_with_that_class": sum(r["copied_class"] == top for r in w), "rounds": len(w),
            **{k: statistics.median(r[k] for r in w) for k in ("norm_rank", "extreme_rank", "cos_copied_mean",
                                                               "cos_ffl_copied", "cos_ffl_plain", "norm_ffl_over_plain")}}
    log.write(json.dumps({"medians": windows}) + "\n")
    log.close()


if __name__ == "__main__":
    main()
