"""The maths every plug-in family shares, at the bottom of the import graph.

Attacks, auditors and aggregation rules all speak the update matrix: an
``(n, d)`` tensor with one row per participating client. What they compute
from it in common lives here, once:

- :mod:`fedpoison.core.rows`: finite-row masks, row norms and their quantiles, Gram matrices,
  top-magnitude masks, median-centred z-scores,
  pairwise and point distances, cosines, clip factors, Krum scores, and the
  per-coordinate mean and standard deviation;
- :mod:`fedpoison.core.order_statistics`: coordinate-wise medians, trimmed
  means and Bulyan's closest-to-median mean;
- :mod:`fedpoison.core.draws`: noise and permutations drawn from an explicit
  generator;
- :mod:`fedpoison.core.slices`: :class:`~fedpoison.core.slices.ParamSlice`,
  where one parameter tensor lives in the flat vector.

Nothing here imports any other part of fedpoison.
"""
