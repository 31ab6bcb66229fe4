"""How long the results store takes to verify every finished run's checksums.

``fedpoison grid`` and ``fedpoison results`` verify each run's files against
the SHA-256 sums in its ``DONE.json`` before reading anything. This builds a
store of ``--runs`` runs of ``--kb`` kilobytes each (random bytes, the size of
a typical digits run with its audit log and model) and times one full scan.

Usage: ``python benchmarks/store_verify.py --runs 200 --kb 241``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fedpoison.experiments.store import ResultStore


def main() -> None:
    """Build the store, then time :meth:`ResultStore.scan` (best of three)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--kb", type=int, default=241)
    args = parser.parse_args()
    audit = max(args.kb * 1000 - 41_000, 1)
    files = {"config.yaml": b"x" * 1000, "history.csv": b"y" * 20_000, "summary.json": b"{}",
             "audit.csv": os.urandom(audit), "model.safetensors": os.urandom(20_000)}
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp))
        with store.writing():
            for i in range(args.runs):
                store.commit(f"k{i:05d}", files)
        best = min(_timed(store) for _ in range(3))
    total_mb = args.runs * sum(len(v) for v in files.values()) / 1e6
    print(f"{args.runs} runs, {total_mb:.0f} MB: full verification {best * 1000:.0f} ms "
          f"({total_mb / best:.0f} MB/s)")


def _timed(store: ResultStore) -> float:
    start = time.perf_counter()
    finished, damaged = store.scan()
    assert not damaged and finished
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
