"""fedpoison as a benchmark contender: ``fedpoison.run`` on a workload of speed_common.py.

Run: ``python benchmarks/speed_fedpoison.py W1 [--engine auto|sequential|batched]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import WORKLOADS

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--engine", default="auto", choices=["auto", "sequential", "batched"])
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more key=value overrides")
    args = parser.parse_args()
    t0 = time.perf_counter()
    import fedpoison

    w = WORKLOADS[args.workload]
    result = fedpoison.run(overrides=[*w.fedpoison_overrides(), f"local.engine={args.engine}", *args.extra])
    engine = args.engine
    if engine == "auto":  # what auto resolved to, by the same rule the run used
        from fedpoison.models import ParamSpec, build_model
        from fedpoison.training import LocalPlan
        from fedpoison.training.batched import BatchedEngine, choose_engine

        cfg = result.config
        model = build_model(cfg.model.name, (1, 28, 28), 10, cfg.model)
        engine = choose_engine(model, ParamSpec.of(model), LocalPlan(), "cpu")
        if engine == "batched":
            b = BatchedEngine(model, ParamSpec.of(model), LocalPlan())
            engine = f"batched ({b.workers} lanes, {'vmap' if b.vectorize else 'per-client loops'})"
    # the last evaluation (fedpoison's summary "final_accuracy" is the mean of the last k evaluations,
    # which with eval.every = rounds would mix in the first round's)
    last = float(result.history["test_accuracy"].dropna().iloc[-1])
    out = {"final_accuracy": last, "summary_final_accuracy": result.summary["final_accuracy"],
           "inner_s": time.perf_counter() - t0,
           "train_s": float(result.timings["train_s"].sum()), "engine": engine}
    print("RESULT " + json.dumps(out), flush=True)
