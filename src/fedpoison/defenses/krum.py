"""Krum and Multi-Krum (Blanchard et al. 2017).

Reference: Peva Blanchard, El Mahdi El Mhamdi, Rachid Guerraoui and Julien
Stainer, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent", NeurIPS 2017 (Krum, Section 4; Multi-Krum, Section 5).

Variant, exactly as in the paper: the score of row ``i`` is the sum of the
squared L2 distances to its ``n - f - 2`` closest other rows,

.. math:: s(i) = \\sum_{i \\to j} \\|x_i - x_j\\|^2,

where :math:`i \\to j` ranges over the ``n - f - 2`` nearest neighbours of
``i`` (``i`` itself excluded). Implementations differ here (ByzFL averages over
``n - f - 1`` neighbours, some use ``n - f``); we keep the paper's count because
its proof (Lemma 1) needs it and it is the one the requirement ``n >= 2f + 3``
is stated for. Krum returns the row with the lowest score (ties: the lowest
index). Multi-Krum returns the uniform mean of the ``m`` rows with the lowest
scores, scored once (not re-scored after each pick; Bulyan re-scores);
``m = n - f`` by default, as the paper suggests. Sample weights are ignored.

The scores are :func:`fedpoison.core.rows.krum_scores`, the one Krum that the
auditors' ``krum`` signal and Fang et al.'s attack on Krum also call. All
distances come from one Gram product; everything else is ``O(n^2 log n)``.
Guarantee used by the tests: every selected row is within
``sqrt(n - f - 2) * D`` of some honest row, ``D`` being the honest rows'
diameter, whatever the ``f`` Byzantine rows hold.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import krum_scores, pairwise_sq_distances
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import at_least, enforce
from fedpoison.registry import NoParams, Requirement

#: Blanchard et al.'s ``2f + 2 < n``.
KRUM_REQUIRES = at_least(2, 3, "n >= 2f + 3")


def multi_krum_select(sq_dist: Tensor, f: int, m: int) -> tuple[Tensor, Tensor]:
    """``(selected bool (n,), scores (n,))``: the ``m`` rows with the lowest Krum scores.

    Ties are broken by the lower index (a stable sort), so the choice is
    deterministic.
    """
    scores = krum_scores(sq_dist, f)
    order = torch.sort(scores, stable=True).indices
    selected = torch.zeros(sq_dist.shape[0], dtype=torch.bool, device=sq_dist.device)
    selected[order[:m]] = True
    return selected, scores


class MultiKrumParams(BaseModel):
    """Parameters of ``multi_krum``."""

    model_config = ConfigDict(extra="forbid")
    #: Rows averaged; ``None`` means ``n - f``.
    m: int | None = Field(default=None, ge=1)


def _aggregate_selected(updates: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
    w = selected.to(updates.dtype)
    w = w / w.sum()
    if int(selected.sum()) == 1:
        return updates[int(torch.nonzero(selected)[0, 0])].clone(), w
    return w @ updates, w


#: Krum's requirement, and the rows averaged fit in the rows there are.
MULTI_KRUM_REQUIRES = Requirement(
    "n >= 2f + 3, 1 <= m <= n",
    lambda n, f, p: n >= 2 * f + 3 and (getattr(p, "m", None) is None or 1 <= p.m <= n),
)


@RULES.register(
    "multi_krum",
    description="Multi-Krum: mean of the m rows with the lowest Krum scores (m = n - f by default).",
    params=MultiKrumParams,
    reference="Blanchard et al. 2017, Machine Learning with Adversaries (Multi-Krum); n - f - 2 neighbours.",
    requires=MULTI_KRUM_REQUIRES,
    filters=True,
)
class MultiKrum:
    """Multi-Krum over the update matrix; ``scores`` are Krum scores (lower is kept)."""

    name = "multi_krum"

    def __init__(self, params: MultiKrumParams | None = None, *, f: int = 0) -> None:
        self.m = (params or MultiKrumParams()).m
        self.f = f

    def _m(self, n: int) -> int:
        return self.m if self.m is not None else n - self.f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        m = self._m(n)
        enforce(MULTI_KRUM_REQUIRES, self.name, n, self.f, SimpleNamespace(m=m), m=m)
        selected, scores = multi_krum_select(pairwise_sq_distances(updates), self.f, m)
        agg, w = _aggregate_selected(updates, selected)
        return AggregationResult(agg, w, selected, scores, info={"selected": float(m)})


@RULES.register(
    "krum",
    description="Krum: the row with the lowest sum of squared distances to its n - f - 2 nearest rows.",
    params=NoParams,
    reference="Blanchard et al. 2017, Machine Learning with Adversaries (Krum); n - f - 2 neighbours.",
    requires=KRUM_REQUIRES,
    filters=True,
)
class Krum(MultiKrum):
    """Krum: Multi-Krum selecting one row."""

    name = "krum"

    def __init__(self, params: NoParams | None = None, *, f: int = 0) -> None:
        super().__init__(MultiKrumParams(m=1), f=f)
