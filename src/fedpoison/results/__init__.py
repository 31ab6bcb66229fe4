"""Results of grids as tidy tables, exports, figures and reports.

>>> from fedpoison import results                       # doctest: +SKIP
>>> r = results.load("out/demo")                        # doctest: +SKIP
>>> r.runs[["attack_label", "defense_label", "final_accuracy"]]   # doctest: +SKIP
>>> r.seeds()                                           # mean/std over seeds  # doctest: +SKIP
"""

from fedpoison.results.export import export, pivot_mean_std, summary_table, to_latex, to_markdown
from fedpoison.results.tables import Results, aggregate_seeds, load

__all__ = ["Results", "aggregate_seeds", "export", "load", "pivot_mean_std", "summary_table", "to_latex",
           "to_markdown"]
