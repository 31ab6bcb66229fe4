"""Issue 7's speed benchmarks W1-W4: fedpoison against the plain PyTorch reference (and peers).

Workloads (speed_common.py):

* W1: compute-bound, Fashion-MNIST 50 x 600 IID, cnn28, 1 epoch, batch 32, lr 0.05, 5 rounds;
  W1-krum: the same with 10 sign-flipping clients against Krum. Goal <= 0.8x the reference.
* W2: 1,000 clients x 60 samples, MLP, 100 per round, 10 rounds. Goal: batched engine >= 2x faster.
* W3: FedSGD, 100 clients, one step of batch 64 per round, cnn28, 50 rounds. Goal >= 3x faster.
* W4: grid throughput, 27 short digits runs (3 attacks x 3 defenses x 3 seeds): ``fedpoison grid
  --workers 2`` against 27 one-by-one ``fedpoison run`` processes. Goal >= 2x the runs per minute.

Every contender runs in its own subprocess, interleaved, medians reported (speed_common.py).
Peers (Flower, ByzFL) run from ``benchmarks/.env-peers`` when it exists and a peer script
``speed_<peer>.py`` is present.

Run: ``python benchmarks/speed.py [W1 W1-krum W2 W3 W4] [--repeats 3] [--no-write] [--quick]``
(``--quick``: the reference and fedpoison only, printed, RESULTS.md untouched).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import (
    WORKLOADS,
    Contender,
    bench_env,
    best_reference,
    compare,
    machine,
    markdown_table,
    reference_contenders,
    update_results,
)

HERE = Path(__file__).resolve().parent
PEERS_PY = HERE / ".env-peers" / "bin" / "python"

GOALS = {
    "W1": ("fedpoison <= 0.8x the reference's wall time, and faster than Flower and ByzFL", 0.8),
    "W1-krum": ("fedpoison <= 0.8x the reference's wall time, and faster than Flower and ByzFL", 0.8),
    "W2": ("batched engine >= 2x faster than the reference (<= 0.5x), >= 5x faster than Flower", 0.5),
    "W3": ("fedpoison >= 3x faster than the sequential reference on CPU (<= 0.33x)", 1 / 3),
}


def contenders_for(name: str, peers: bool = True) -> list[Contender]:
    py = sys.executable
    out = [
        *reference_contenders(name),
        Contender("fedpoison (engine auto)", [py, str(HERE / "speed_fedpoison.py"), name]),
        Contender("fedpoison (engine sequential)", [py, str(HERE / "speed_fedpoison.py"), name, "--engine", "sequential"]),
    ]
    if peers and PEERS_PY.exists():
        for peer in ("flower", "byzfl"):
            script = HERE / f"speed_{peer}.py"
            if script.exists():
                out.append(Contender(peer, [str(PEERS_PY), str(script), name]))
    return out


def run_workload(name: str, repeats: int, write: bool, with_peers: bool = True) -> dict[str, Any]:
    w = WORKLOADS[name]
    print(f"== {name}: {w.description}", flush=True)
    before = machine()
    summaries = compare(contenders_for(name, with_peers), repeats)
    after = machine()
    ref = best_reference(summaries)
    auto = summaries[2]
    goal_text, goal = GOALS[name]
    ratio = auto["wall_s"] / ref["wall_s"] if not auto.get("failed") else float("nan")
    train_ratio = auto["result"].get("train_s", float("nan")) / ref["result"].get("train_s", float("nan"))
    peers = summaries[4:]
    peer_lines = "".join(
        f"- {p['name']}: " + ("failed (see the log)" if p.get("failed") else
                              f"{p['wall_s']:.2f} s; fedpoison is {p['wall_s'] / auto['wall_s']:.2f}x faster") + "\n"
        for p in peers
    ) or ("- Flower, ByzFL: not run (no `benchmarks/.env-peers` with a peer script; see below).\n" if with_peers
          else "- Flower, ByzFL: not run (`--quick`).\n")
    body = f"""## Speed {name}: {w.description}

Command: `python benchmarks/speed.py {name} --repeats {repeats}`

Machine: {before['cpu']}, {before['cores']} cores, torch {before['torch']}, Python {before['python']}.
**Shared machine**: load average {before['loadavg']} before, {after['loadavg']} after (other engineers'
jobs ran at the same time); medians of {repeats} interleaved runs, whole-process wall time and peak RSS.

{markdown_table(summaries, ref['name'])}

Ratios are to the faster reference variant ({ref['name']}); all contenders ran with `OMP_WAIT_POLICY=PASSIVE`.

Training phase only (sum of the per-round client training time): reference
{ref['result'].get('train_s', float('nan')):.2f} s, fedpoison (auto)
{auto['result'].get('train_s', float('nan')):.2f} s, ratio {train_ratio:.2f}x.

Goal: {goal_text}. Measured: whole process **{ratio:.2f}x**, training phase **{train_ratio:.2f}x**
({'met' if ratio <= goal else 'not met' if ratio == ratio else 'n/a'} on whole-process time).

Peers:
{peer_lines}"""
    print(body, flush=True)
    if write:
        update_results(f"speed_{name}", body)
    return {"name": name, "summaries": summaries}


# ---- W4: grid throughput ------------------------------------------------------------------
W4_BASE: dict[str, Any] = {
    "rounds": 5, "dataset": {"name": "digits"}, "clients": {"num": 20},
    "local": {"epochs": 1}, "attack": {"fraction": 0.2, "knowledge": "omniscient"}, "eval": {"every": 5},
}
W4_AXES: dict[str, list[Any]] = {
    "attack.name": ["sign_flip", "alie", "scaling"],
    "defense.name": ["median", "trimmed_mean", "krum"],
    "seed": [0, 1, 2],
}


def _w4_runs() -> list[list[str]]:
    """The 27 runs as ``--set`` lists (the product of the axes, first axis slowest)."""
    import itertools

    def flat(prefix: str, d: dict[str, Any]) -> list[str]:
        out = []
        for k, v in d.items():
            key = f"{prefix}{k}"
            out += flat(key + ".", v) if isinstance(v, dict) else [f"{key}={v}"]
        return out

    base = flat("", W4_BASE)
    keys = list(W4_AXES)
    return [base + [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
            for combo in itertools.product(*W4_AXES.values())]


def run_w4(repeats: int, write: bool, workers: int = 2) -> None:
    exe = shutil.which("fedpoison")
    if exe is None:
        print("W4: no `fedpoison` command on PATH; skipped", flush=True)
        return
    print("== W4: grid throughput, 27 digits runs", flush=True)
    before = machine()
    grid_s, serial_s = [], []
    for rep in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            grid_file = Path(tmp) / "w4.yaml"
            grid_file.write_text(yaml.safe_dump({"name": "w4", "base": W4_BASE, "axes": W4_AXES}))
            t0 = time.perf_counter()
            proc = subprocess.run([exe, "grid", str(grid_file), "--workers", str(workers), "--out",
                                   str(Path(tmp) / "grid"), "--quiet"], capture_output=True, text=True,
                                  env=bench_env())
            grid_s.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-2000:], flush=True)
                raise SystemExit(f"W4: fedpoison grid failed (rc={proc.returncode})")
            done = len(list((Path(tmp) / "grid").rglob("summary.json")))
            t0 = time.perf_counter()
            for i, sets in enumerate(_w4_runs()):
                args = [exe, "run", "--out", str(Path(tmp) / "serial" / str(i))]
                for s in sets:
                    args += ["--set", s]
                p = subprocess.run(args, capture_output=True, text=True, env=bench_env(COLUMNS="80"))
                if p.returncode != 0:
                    print(p.stdout[-2000:], p.stderr[-2000:], flush=True)
                    raise SystemExit(f"W4: fedpoison run failed (rc={p.returncode})")
            serial_s.append(time.perf_counter() - t0)
        print(f"  [{rep + 1}/{repeats}] grid {grid_s[-1]:.1f} s ({done} summaries), one by one {serial_s[-1]:.1f} s",
              flush=True)
    after = machine()
    import statistics

    g, s = statistics.median(grid_s), statistics.median(serial_s)
    body = f"""## Speed W4: grid throughput, 27 short digits runs (3 attacks x 3 defenses x 3 seeds)

Command: `python benchmarks/speed.py W4 --repeats {repeats}`

Runs: digits, 20 clients (20% malicious, omniscient), 5 rounds, 1 local epoch; attacks sign_flip, alie, scaling x
defenses median, trimmed_mean, krum x seeds 0-2. `fedpoison grid --workers {workers}` against the same 27
runs started one by one as `fedpoison run` processes.

Machine: {before['cpu']}, {before['cores']} cores. **Shared machine**: load average {before['loadavg']}
before, {after['loadavg']} after; medians of {repeats} runs.

| how | median wall (s) | runs (s) | runs per minute |
|---|---:|---|---:|
| `fedpoison grid --workers {workers}` | {g:.1f} | {', '.join(f'{x:.1f}' for x in grid_s)} | {27 * 60 / g:.1f} |
| 27 x `fedpoison run`, one by one | {s:.1f} | {', '.join(f'{x:.1f}' for x in serial_s)} | {27 * 60 / s:.1f} |

Goal: >= 2x the throughput of the one-by-one runs. Measured: **{s / g:.2f}x** ({'met' if s / g >= 2 else 'not met'}).
"""
    print(body, flush=True)
    if write:
        update_results("speed_W4", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["W1", "W1-krum", "W2", "W3", "W4"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    parser.add_argument("--quick", action="store_true",
                        help="the reference and fedpoison only, no Flower or ByzFL (a W3 pass is 40%% Flower); "
                             "prints, never updates RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.no_write = True
    for name in args.workloads:
        if name == "W4":
            run_w4(args.repeats, not args.no_write)
        elif name in GOALS:
            run_workload(name, args.repeats, not args.no_write, with_peers=not args.quick)
        else:
            raise SystemExit(f"unknown workload {name!r}; expected one of {[*GOALS, 'W4']}")


if __name__ == "__main__":
    main()
