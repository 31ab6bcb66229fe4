"""Published result tables as runnable experiments, compared cell by cell with the paper.

Each reproduction is a YAML file in this folder (:mod:`.spec`): a grid over
the paper's protocol, the paper's numbers with their source, a tolerance
declared before any run, three scales (``smoke``, ``cpu``, ``paper``) and the
protocol choices the paper leaves open. ``fedpoison reproduce NAME`` runs it
through the ordinary grid machinery and writes the comparison report
(:mod:`.compare`, :mod:`.report`).
"""

from fedpoison.reproductions.collect import Collected, collect
from fedpoison.reproductions.compare import CellResult, compare, verdict
from fedpoison.reproductions.report import write_report
from fedpoison.reproductions.spec import Reproduction, available, cells, load_reproduction, reproduction_grid

__all__ = [
    "CellResult", "Collected", "Reproduction", "available", "cells", "collect", "compare", "load_reproduction",
    "reproduction_grid", "verdict", "write_report",
]
