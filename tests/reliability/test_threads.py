"""Runs in threads equal runs in sequence; a grid's results do not depend on its worker count.

Promises (LIMITS.md, "Determinism"): model initialisation and every other draw
take explicit generators (nothing touches torch's global RNG), and the thread
count a run computes with is read and changed under one lock, so runs in
concurrent threads choose exactly what they would choose alone. A grid pins
the thread count per run (``--threads-per-run``, default 1), so ``--workers 1``
and ``--workers 2`` give byte-identical histories.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
import yaml

import fedpoison
from fedpoison.cli import main
from fedpoison.experiments.store import ResultStore

CONFIGS = [
    ["rounds=3", "dataset.limit=400", "seed=0"],
    ["rounds=3", "dataset.limit=400", "seed=1", "partition.name=dirichlet", "attack.name=sign_flip",
     "attack.fraction=0.2", "defense.name=median"],
    ["rounds=2", "dataset.limit=400", "seed=2", "model.name=cnn8", "local.engine=batched"],
    ["rounds=2", "dataset.limit=400", "seed=3", "model.name=cnn8"],
]


def _bytes(result: fedpoison.RunResult) -> tuple[str, str]:
    return result.history.to_csv(index=False), result.clients.to_csv(index=False)


def test_four_threads_equal_the_same_runs_in_sequence() -> None:
    rng_before = torch.get_rng_state().clone()
    sequential = [_bytes(fedpoison.run(overrides=o)) for o in CONFIGS]
    assert torch.equal(torch.get_rng_state(), rng_before), "a run drew from torch's global RNG"
    threaded: list[tuple[str, str] | None] = [None] * len(CONFIGS)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            threaded[i] = _bytes(fedpoison.run(overrides=CONFIGS[i]))
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(CONFIGS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (seq, thr) in enumerate(zip(sequential, threaded, strict=True)):
        assert thr is not None and seq[0] == thr[0] and seq[1] == thr[1], f"run {i} differs in a thread"


def test_model_initialisation_draws_from_its_generator_only() -> None:
    from fedpoison.models import build_model
    from fedpoison.models.init import build_seeded

    def make() -> torch.nn.Module:
        return build_model("cnn8", (1, 8, 8), 10)

    torch.manual_seed(123)
    a = build_seeded(make, torch.Generator().manual_seed(7))
    torch.manual_seed(456)  # a different global state changes nothing
    b = build_seeded(make, torch.Generator().manual_seed(7))
    c = build_seeded(make, torch.Generator().manual_seed(8))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_grid_results_do_not_depend_on_workers(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "w", "base": {"rounds": 2, "dataset": {"limit": 300},
                                                          "clients": {"num": 6}, "model": {"name": "cnn8"}},
                                    "axes": {"seed": [0, 1]}}))
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["grid", str(grid), "--out", str(out), "--workers", str(workers), "--quiet"]) == 0
        outs[workers] = ResultStore(out)
    keys = outs[1].finished_keys()
    assert keys == outs[2].finished_keys() and len(keys) == 2
    for key in keys:
        for name in ("history.csv", "audit.csv"):
            a = (outs[1].run_dir(key) / name).read_bytes()
            assert a == (outs[2].run_dir(key) / name).read_bytes(), (key, name)
