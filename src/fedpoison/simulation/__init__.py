"""The simulator: federation set-up, the round loop, results."""

from fedpoison.simulation.federation import Federation, build_federation
from fedpoison.simulation.loop import run, run_round
from fedpoison.simulation.result import RunResult

__all__ = ["Federation", "RunResult", "build_federation", "run", "run_round"]
