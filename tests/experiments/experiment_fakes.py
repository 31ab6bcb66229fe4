"""Helpers of the experiment tests: tiny configs and hand-made result runs."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import pandas as pd

from fedpoison.experiments.store import ResultStore
from fedpoison.plugins import load_config

#: A run that takes well under a second: 2 rounds, 5 clients, 200 digits.
TINY: dict[str, Any] = {"rounds": 2, "clients": {"num": 5}, "dataset": {"name": "digits", "limit": 200}}

#: The command line of the CLI, as a subprocess (works without the console script on PATH).
CLI = [sys.executable, "-c", "import sys; from fedpoison.cli import main; sys.exit(main())"]


def fake_history(rounds: int, final: float, *, asr: float | None = None, start: float = 0.2,
                 diverge_at: int | None = None) -> pd.DataFrame:
    """An accuracy curve rising from ``start`` to ``final`` (and an ASR column when given)."""
    acc = np.linspace(start, final, rounds)
    rows = []
    for r in range(rounds):
        row: dict[str, Any] = {"round": r, "participants": 5, "train_loss": 1.0 / (r + 1)}
        if diverge_at is None or r < diverge_at:
            row["test_accuracy"] = float(acc[r])
            row["test_loss"] = float(1 - acc[r])
            if asr is not None:
                row["attack_success_rate"] = float(asr * (r + 1) / rounds)
        rows.append(row)
        if diverge_at is not None and r >= diverge_at:
            break
    return pd.DataFrame(rows)


def write_fake_run(store: ResultStore, overrides: dict[str, Any], history: pd.DataFrame, *,
                   summary: dict[str, Any] | None = None) -> str:
    """Commit a hand-made run (a real config, a given history) into ``store``; return its key."""
    cfg = load_config(overrides=overrides)
    timings = pd.DataFrame({"round": history["round"], "train_s": 0.1, "aggregate_s": 0.01, "eval_s": 0.01})
    s = {"rounds": len(history), "final_accuracy": float(history["test_accuracy"].dropna().iloc[-1]),
         "seed": cfg.seed, "num_malicious": cfg.num_malicious, "diverged": False}
    s.update(summary or {})
    files = {
        "config.yaml": cfg.to_yaml().encode(),
        "history.csv": history.to_csv(index=False).encode(),
        "timings.csv": timings.to_csv(index=False).encode(),
        "summary.json": json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                    for k, v in s.items()}).encode(),
    }
    assert store.commit(cfg.key(), files, wall_s=0.1, label="fake")
    return cfg.key()

