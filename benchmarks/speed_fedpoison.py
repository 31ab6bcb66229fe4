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
    fed_engine = result.extras.get("engine") if isinstance(result.extras, dict) else None
    # the last evaluation (fedpoison's summary "final_accuracy" is the mean of the last k evaluations,
    # which with eval.every = rounds would mix in the first round's)
    last = float(result.history["test_accuracy"].dropna().iloc[-1])
    out = {"final_accuracy": last, "summary_final_accuracy": result.summary["final_accuracy"],
           "inner_s": time.perf_counter() - t0,
           "train_s": float(result.timings["train_s"].sum()), "engine": fed_engine or args.engine}
    print("RESULT " + json.dumps(out), flush=True)
