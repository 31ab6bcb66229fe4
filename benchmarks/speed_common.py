"""Harness of the speed benchmarks: workloads, and one contender measured in its own subprocess.

Each contender (fedpoison, the plain PyTorch reference, a peer) runs in a fresh
subprocess, so start-up, imports and data loading are part of its wall time and
its memory is its own. Peak memory is measured two ways:

* ``maxrss``: the peak resident set of the contender's main process, from
  ``os.wait4`` (the kernel's exact figure, as ``/usr/bin/time -v`` reports it);
* ``tree_rss``: the peak of the summed RSS of the whole process tree, sampled
  every 50 ms from ``/proc`` (what matters for peers that start worker
  processes, e.g. Flower's Ray actors). Shared pages are counted once per
  process, so this over-counts a tree that shares libraries.

A contender prints one line ``RESULT {json}`` (final accuracy and the like).
Runs of different contenders are interleaved (A B A B ...) so drifting load on
a shared machine hits them alike, and medians are reported.

OpenMP waiting: every contender runs with ``OMP_WAIT_POLICY=PASSIVE`` unless
``FEDPOISON_BENCH_OMP_DEFAULT=1``. On a shared, oversubscribed machine the
default policy (spin at every barrier) made a two-thread training step 25x
slower (778 ms vs 31 ms per cnn28 step at load ~11 on 2 cores), which measures
the neighbours, not the code. The reference is run with one and with two
intra-op threads, and ratios are taken against the faster of the two.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FMNIST = "/usr/share/datasets/fashion-mnist"


# ---- workloads -------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """One federated workload, spelled out for every contender."""

    name: str
    clients: int
    per_round: int
    samples: int  # per client (IID); the dataset is cut to clients * samples
    model: str  # "cnn28" or "mlp"
    rounds: int
    batch_size: int
    lr: float
    epochs: int = 1
    steps: int | None = None  # FedSGD: steps=1
    momentum: float = 0.0
    attackers: int = 0  # sign-flipping clients (always taking part)
    defense: str = "mean"  # "mean" (sample-weighted FedAvg) or "krum"
    description: str = ""

    @property
    def limit(self) -> int:
        return self.clients * self.samples

    def fedpoison_overrides(self) -> list[str]:
        """The same workload as ``fedpoison run --set`` overrides."""
        out = [
            "dataset.name=fashion-mnist", f"dataset.limit={self.limit}", "partition.name=iid",
            f"clients.num={self.clients}", f"clients.per_round={self.per_round}", f"model.name={self.model}",
            f"rounds={self.rounds}", f"local.epochs={self.epochs}", f"local.batch_size={self.batch_size}",
            f"local.lr={self.lr}", f"local.momentum={self.momentum}", f"eval.every={self.rounds}",
            f"defense.name={self.defense}", "seed=0",
        ]
        if self.steps is not None:
            out.append(f"local.steps={self.steps}")
        if self.attackers:
            out += ["attack.name=sign_flip", f"attack.count={self.attackers}", "attack.always_participate=true"]
        return out


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("core", 50, 50, 600, "cnn28", 5, 32, 0.05,
                 description="issue 2: Fashion-MNIST, 50 clients x 600 IID, cnn28, 1 epoch, batch 32, lr 0.05, 5 rounds"),
        Workload("W1", 50, 50, 600, "cnn28", 5, 32, 0.05,
                 description="compute-bound: as core"),
        Workload("W1-krum", 50, 50, 600, "cnn28", 5, 32, 0.05, attackers=10, defense="krum",
                 description="W1 with 10 sign-flipping clients against Krum"),
        Workload("W2", 1000, 100, 60, "mlp", 10, 32, 0.05,
                 description="many small clients: 1,000 x 60 samples, MLP (64 hidden), 100 per round, 1 epoch, batch 32"),
        Workload("W3", 100, 100, 600, "cnn28", 50, 64, 0.1, steps=1,
                 description="FedSGD (Fang et al.): 100 clients, one step of batch 64 per round, cnn28, 50 rounds"),
    ]
}


def peer_workload_arg(description: str) -> str:
    """Parse a peer script's command line (``WORKLOAD [--rounds N]``); return the workload's name.

    ``--rounds`` (smoke tests only) shortens that workload in :data:`WORKLOADS` for this process.
    """
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=None, help="fewer rounds (smoke tests only)")
    args = parser.parse_args()
    if args.rounds:
        WORKLOADS[args.workload] = dataclasses.replace(WORKLOADS[args.workload], rounds=args.rounds)
    return str(args.workload)


# ---- measuring one subprocess ----------------------------------------------------------
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """Summed RSS (KiB) of ``pid`` and all its descendants, now."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_kib(p)
        stack += _children(p)
    return total


@dataclass
class Measurement:
    """One run of one contender."""

    wall_s: float
    maxrss_mib: float
    tree_rss_mib: float
    result: dict[str, Any]
    returncode: int
    log_tail: str = ""

    @property
    def peak_mib(self) -> float:
        return max(self.maxrss_mib, self.tree_rss_mib)


def bench_env(**extra: str) -> dict[str, str]:
    """The environment contenders run in (see the module docstring on OpenMP waiting)."""
    env = dict(os.environ)
    if env.get("FEDPOISON_BENCH_OMP_DEFAULT") != "1":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.update(extra)
    return env


def measure(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600) -> Measurement:
    """Run ``cmd`` to completion; return its wall time, peak memory and ``RESULT`` line."""
    env = env if env is not None else bench_env()
    with tempfile.TemporaryFile(mode="w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_kib(proc.pid))
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.01)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    result: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return Measurement(wall, usage.ru_maxrss / 1024, peak[0] / 1024, result, proc.returncode, text[-3000:])


@dataclass
class Contender:
    """A named command line to measure."""

    name: str
    cmd: list[str]
    env: dict[str, str] | None = None
    runs: list[Measurement] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.runs if r.returncode == 0]
        if not ok:
            return {"name": self.name, "failed": True, "log_tail": self.runs[-1].log_tail if self.runs else ""}
        return {
            "name": self.name,
            "wall_s": statistics.median(r.wall_s for r in ok),
            "wall_all": [round(r.wall_s, 2) for r in ok],
            "peak_mib": statistics.median(r.peak_mib for r in ok),
            "maxrss_mib": statistics.median(r.maxrss_mib for r in ok),
            "tree_rss_mib": statistics.median(r.tree_rss_mib for r in ok),
            "result": {**ok[-1].result, **{
                key: statistics.median(r.result[key] for r in ok)
                for key in ("train_s", "inner_s") if all(key in r.result for r in ok)
            }},
            "runs": len(ok),
        }


def compare(contenders: list[Contender], repeats: int, *, verbose: bool = True) -> list[dict[str, Any]]:
    """Measure every contender ``repeats`` times, interleaved; return their summaries."""
    for rep in range(repeats):
        for c in contenders:
            m = measure(c.cmd, env=c.env)
            c.runs.append(m)
            if verbose:
                status = "ok" if m.returncode == 0 else f"FAILED rc={m.returncode}"
                print(f"  [{rep + 1}/{repeats}] {c.name:<28} {m.wall_s:8.2f} s  peak {m.peak_mib:7.0f} MiB  "
                      f"acc {m.result.get('final_accuracy', float('nan')):.4f}  {status}", flush=True)
                if m.returncode != 0:
                    print(m.log_tail, flush=True)
    return [c.summary() for c in contenders]


def machine() -> dict[str, Any]:
    """What produced the figures: CPU, cores, Python, torch, load."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    # torch is not imported here: the harness stays small, and a child's ru_maxrss
    # (which counts the pre-exec parent image) is not inflated by it
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": version("torch"),
            "torch_threads": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def best_reference(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The faster of the reference variants (the strongest baseline)."""
    refs = [s for s in summaries if s["name"].startswith("reference") and not s.get("failed")]
    return min(refs, key=lambda s: s["wall_s"])


def reference_contenders(workload: str, python: str = sys.executable) -> list[Contender]:
    """The plain PyTorch reference with one and with two intra-op threads."""
    script = str(HERE / "speed_reference.py")
    return [Contender("reference, 2 threads", [python, script, workload, "--threads", "2"]),
            Contender("reference, 1 thread", [python, script, workload, "--threads", "1"])]


def markdown_table(summaries: list[dict[str, Any]], baseline: str) -> str:
    """A table of medians with ratios to ``baseline``."""
    base = next(s for s in summaries if s["name"] == baseline)
    rows = ["| contender | median wall (s) | runs (s) | peak memory (MiB) | time / reference | memory / reference | final accuracy |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for s in summaries:
        if s.get("failed"):
            rows.append(f"| {s['name']} | failed | | | | | |")
            continue
        acc = s["result"].get("final_accuracy")
        acc_text = f"{acc:.4f}" if isinstance(acc, (int, float)) else "n/a"
        rows.append(
            f"| {s['name']} | {s['wall_s']:.2f} | {', '.join(f'{w:.1f}' for w in s['wall_all'])} | {s['peak_mib']:.0f} "
            f"| {s['wall_s'] / base['wall_s']:.2f}x | {s['peak_mib'] / base['peak_mib']:.2f}x | {acc_text} |"
        )
    return "\n".join(rows)


def update_results(section: str, body: str, path: Path = HERE / "RESULTS.md") -> None:
    """Replace (or append) the block between ``<!-- BEGIN section -->`` and ``<!-- END section -->``.

    Only that block is touched, so sections written by other benchmarks stay as they are.
    """
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def python_cmd(*args: str, python: str = sys.executable) -> list[str]:
    return [python, *args]
