"""FoolsGold (Fung et al. 2020).

Reference: Clement Fung, Chris J. M. Yoon and Ivan Beschastnikh, "The
Limitations of Federated Learning in Sybil Settings", RAID 2020, Algorithm 1.

Variant, as in Algorithm 1 without the optional feature-importance weighting
(Section 5.3, which needs the output layer's structure):

1. each client's history :math:`H_i` is the sum of all updates it has sent
   (kept on the instance, keyed by ``ctx.client_ids``; one instance per run);
2. :math:`cs_{ij} = \\cos(H_i, H_j)` from one Gram product, with
   :math:`cs_{ii} = 0` (so :math:`v_i = \\max_j cs_{ij} \\ge 0`, as in the authors'
   code);
3. pardoning: :math:`cs_{ij} \\leftarrow cs_{ij} v_i / v_j` when :math:`v_j > v_i`;
4. :math:`\\alpha_i = 1 - \\max_j cs_{ij}`, clipped to [0, 1], divided by its
   maximum, 1 replaced by 0.99, then
   :math:`\\alpha_i = \\kappa(\\ln(\\alpha_i / (1 - \\alpha_i)) + 0.5)` clipped to [0, 1].

The aggregate is :math:`\\sum_i \\alpha_i x_i / \\sum_i \\alpha_i` (normalised so the
server step matches FedAvg's scale). When every :math:`\\alpha_i` is 0 the
aggregate is the zero update and ``info["no_weight"] = 1`` is recorded; it
never falls back to the mean. ``scores`` are :math:`v_i`, each client's largest
history similarity (higher is more suspicious).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import cosine_similarity_matrix
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import requirement_error


class FoolsGoldParams(BaseModel):
    """Parameters of ``foolsgold``."""

    model_config = ConfigDict(extra="forbid")
    #: Confidence kappa of the logit step.
    kappa: float = Field(default=1.0, gt=0.0)


def foolsgold_weights(history: Tensor, kappa: float) -> tuple[Tensor, Tensor]:
    """``(alpha (n,), max similarity v (n,))`` from the ``(n, d)`` client histories."""
    cs = cosine_similarity_matrix(history)
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    larger = v[None, :] > v[:, None]  # larger[i, j]: v_j > v_i
    ratio = v[:, None] / torch.where(larger, v[None, :], torch.ones_like(cs))
    pardoned = torch.where(larger, cs * ratio, cs)
    alpha = (1.0 - pardoned.max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if not bool(top > 0):
        return torch.zeros_like(alpha), v
    alpha = alpha / top
    alpha = torch.where(alpha >= 1.0, torch.full_like(alpha, 0.99), alpha)
    logit = kappa * (torch.log(alpha / (1.0 - alpha)) + 0.5)
    alpha = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    return alpha, v


@RULES.register(
    "foolsgold",
    tags=("stateful", "per_client_state"),
    description="FoolsGold: down-weight clients whose update histories are too similar to each other.",
    params=FoolsGoldParams,
    reference="Fung et al. 2020, The Limitations of Federated Learning in Sybil Settings (FoolsGold, Alg. 1).",
    requires="none on n and f (targets sybils: colluding clients with similar histories)",
    filters=True,
)
class FoolsGold:
    """FoolsGold with per-client histories (stateful: one instance per run)."""

    def __init__(self, params: FoolsGoldParams | None = None, *, f: int = 0) -> None:
        self.kappa = (params or FoolsGoldParams()).kappa
        self.f = f
        self._row_of: dict[int, int] = {}
        self._history: Tensor | None = None

    def state_dict(self) -> dict[str, object]:
        """Per-client update histories and which row holds whom, for checkpoints."""
        if self._history is None:
            return {}
        ids = sorted(self._row_of, key=self._row_of.__getitem__)
        return {"client_ids": torch.tensor(ids, dtype=torch.long), "history": self._history.detach().cpu()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`."""
        if not state:
            self._row_of, self._history = {}, None
            return
        ids = state["client_ids"]
        history = state["history"]
        assert isinstance(ids, Tensor) and isinstance(history, Tensor)
        self._row_of = {int(c): i for i, c in enumerate(ids.tolist())}
        self._history = history

    def _histories(self, updates: Tensor, client_ids: Tensor) -> Tensor:
        n, d = updates.shape
        ids = [int(i) for i in client_ids.reshape(-1).tolist()]
        if len(ids) != n or len(set(ids)) != n:
            raise requirement_error(
                "foolsgold", "one distinct client id per row (no bucketing before it)", rows=n, ids=ids
            )
        if self._history is not None and self._history.shape[1] != d:
            raise requirement_error(
                "foolsgold", "the same update length every round", d=d, previous_d=self._history.shape[1]
            )
        for i in ids:
            self._row_of.setdefault(i, len(self._row_of))
        rows = torch.tensor([self._row_of[i] for i in ids], dtype=torch.long, device=updates.device)
        old = self._history
        in_order = bool((rows == torch.arange(n, device=rows.device)).all())
        if old is None and in_order and len(self._row_of) == n:
            self._history = updates.clone()  # first round, every client new: the history is the update
            return self._history
        if old is None or old.shape[0] < len(self._row_of):
            hist = torch.zeros(len(self._row_of), d, dtype=updates.dtype, device=updates.device)
            if old is not None:
                hist[: old.shape[0]] = old.to(device=updates.device, dtype=updates.dtype)
        else:
            hist = old.to(device=updates.device, dtype=updates.dtype)
        hist.index_add_(0, rows, updates)  # the instance's own state, never an input
        self._history = hist
        if rows.shape[0] == hist.shape[0] and in_order:
            return hist  # every known client, in order: no copy
        return hist[rows]  # advanced indexing: index_select on CPU rows was 8x slower

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        d = updates.shape[1]
        hist = self._histories(updates, ctx.client_ids)
        alpha, v = foolsgold_weights(hist, self.kappa)
        total = alpha.sum()
        info = {"mean_alpha": float(alpha.mean())}
        if bool(total > 0):
            w = alpha / total
            agg = w @ updates
        else:
            w = torch.zeros_like(alpha)
            agg = torch.zeros(d, dtype=updates.dtype, device=updates.device)
            info["no_weight"] = 1.0
        return AggregationResult(agg, w, alpha > 0, v, info=info)
