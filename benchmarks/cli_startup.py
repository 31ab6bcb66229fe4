"""Wall time of the CLI's quick commands (``--help``, ``list``) as a user sees it.

Each command runs ``--repeat`` times in a fresh interpreter (``python -m fedpoison ...``, the
way the Makefile calls it); the script prints the median and the range, and the load average
at the start, since on a shared machine the figure moves with the load.

    PYTHONPATH=src python benchmarks/cli_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["--help"],
    ["list", "attacks"],
    ["list", "defenses", "--format", "plain"],
]


def time_command(args: list[str], repeat: int) -> list[float]:
    """Seconds for each of ``repeat`` runs of ``python -m fedpoison *args``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedpoison", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Print one line per command: median and range over the repeats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    for cmd in COMMANDS:
        try:
            t = time_command(cmd, args.repeat)
        except subprocess.CalledProcessError:
            print(f"fedpoison {' '.join(cmd):<32} (not supported by this version)")
            continue
        print(f"fedpoison {' '.join(cmd):<32} median {statistics.median(t):.2f} s "
              f"(min {min(t):.2f}, max {max(t):.2f}, n={len(t)})")


if __name__ == "__main__":
    main()
