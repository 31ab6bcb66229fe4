"""``three_dfed``: an adaptive covert backdoor with indicator feedback, decoy models and noise masks.

Reference: Li et al. 2023, '3DFed: Adaptive and Extensible Framework for
Covert Backdoor Attack in Federated Learning' (IEEE S&P). The attacker
controls ``m`` clients that train on backdoored data (the BadNets trigger of
``backdoor``; clean samples plus backdoored copies, as Bagdasaryan et al.),
and each round it

1. **reads the indicator feedback** of the previous round. Each row it sent
   carried an *indicator*: one low-importance coordinate :math:`i_j` set to a
   marker value :math:`\\delta_j`. The global model's change at :math:`i_j`,
   divided by :math:`\\eta\\,\\delta_j` (:math:`\\eta` the server learning
   rate), is the weight the server gave row :math:`j`:

   .. math:: f_j = \\frac{w_t[i_j] - w_{t-1}[i_j]}{\\eta\\, \\delta_j}

   Row :math:`j` was *rejected* if :math:`f_j \\le \\rho / n_{t-1}`
   (``attack.reject_below`` :math:`= \\rho`, a share of a plain average's
   weight :math:`1/n`), *accepted* if :math:`f_j \\ge 0.8 \\max_k f_k`, else
   *clipped* (the paper's three states);
2. **tunes itself** (the paper's Algorithms 3 and 4, one group): each accepted
   decoy lowers the number of decoys by one; if no backdoor row and no decoy
   got through it adds a decoy (at most ``m - 1``); if fewer than 80% of the
   backdoor rows were accepted, it draws a new noise level
   :math:`\\alpha \\sim U(\\alpha_{min}, 1)` (clamped to [0.01, 0.99]);
3. **norm-clips** each backdoor row to the reference norm :math:`R` (the
   server's bound ``attack.norm_bound`` if known, else the median norm of its
   own rows), and scales a smaller row up by at most ``attack.scale_cap``;
4. adds **noise masks**: Gaussian noise on the low-importance coordinates
   (the ``attack.mask_fraction`` share of coordinates least moved by its own
   training and by the global model last round, :func:`importance`), centred across the backdoor rows so that the
   masks **sum to zero** and cancel in an average, and sized so that each
   row's cosine to the backdoor direction is about :math:`\\alpha`. The rows
   then look as diverse as benign ones to similarity-based defenses while
   their mean is the backdoor update;
5. sends ``num_decoy`` **decoy models** in its last slots: the mean backdoor
   row scaled by ``attack.decoy_scale``, outliers meant to draw the defense's
   attention (and that still push the backdoor when accepted);
6. plants a fresh **indicator** in every row: the row's own coordinate among
   the lowest-importance ones, set to :math:`\\delta_j` = ``attack.indicator_scale``
   times the row's largest absolute coordinate.

Variant and deviations (the paper's full method needs second-order
information and per-defense optimisation): indicators and masks are placed on
the coordinates least moved by the attacker's own training and the last
global change, a first-order stand-in for the paper's near-zero-curvature
neurons; the noise masks are drawn and scaled to a target cosine instead of
optimised by gradient descent; the decoys are scaled copies of the backdoor
update; the attacker's weak-DP detection is left out; one group of attackers
(one :math:`\\alpha`). The attacker's memory (the global model it last saw,
the indicators it planted, the decoy count and :math:`\\alpha`) is kept in
checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.backdoor import TriggerAttack, TriggerParams
from fedpoison.attacks.base import AttackContext, AttackKind, Knowledge
from fedpoison.attacks.registry import register_attack
from fedpoison.core.draws import gaussian_like, uniform_like
from fedpoison.core.rows import row_norms

Status = Literal["accepted", "clipped", "rejected"]


def low_importance(importance: Tensor, count: int) -> Tensor:
    """``(count,)`` indices of the coordinates with the smallest ``importance`` (ties by index)."""
    count = max(0, min(count, importance.numel()))
    order = torch.sort(importance, stable=True).indices
    return order[:count]


def importance(own: Tensor, change: Tensor) -> Tensor:
    """``(d,)`` how much a coordinate matters: ``|mean own row| + |last global change|``.

    Small where neither the attacker's own (backdoor) training nor last
    round's aggregate moved the model: a first-order stand-in for 3DFed's
    near-zero-curvature neurons.
    """
    return own.mean(dim=0).abs() + change.abs()


def indicator_feedback(change: Tensor, indicators: list[int], markers: list[float], server_lr: float) -> Tensor:
    """``(k,)`` the weight the server gave each marked row: ``change[i_j] / (server_lr * delta_j)``."""
    idx = torch.tensor(indicators, dtype=torch.int64, device=change.device)
    delta = torch.tensor(markers, dtype=change.dtype, device=change.device)
    return change[idx] / (server_lr * delta)


def classify_feedback(feedback: Tensor, reject_below: float) -> list[Status]:
    """Accepted (>= 0.8 of the largest feedback), rejected (<= ``reject_below``) or clipped, per row.

    Example
    -------
    >>> classify_feedback(torch.tensor([0.10, 0.0, 0.05]), 0.01)
    ['accepted', 'rejected', 'clipped']
    """
    finite = feedback[torch.isfinite(feedback)]
    top = float(finite.max()) if finite.numel() else 0.0
    out: list[Status] = []
    for f in feedback.tolist():
        if not math.isfinite(f) or f <= reject_below:
            out.append("rejected")
        elif f >= 0.8 * top:
            out.append("accepted")
        else:
            out.append("clipped")
    return out


def norm_clip(rows: Tensor, reference: float, cap: float) -> Tensor:
    """Rows scaled to norm ``reference``: down if larger, up by at most ``cap`` if smaller."""
    norms = row_norms(rows).clamp_min(1e-30)
    factor = (reference / norms).clamp(max=cap)
    factor = torch.where(norms > reference, reference / norms, factor.clamp(min=1.0))
    return rows * factor[:, None]


def zero_sum_masks(
    rows: Tensor, coords: Tensor, alpha: float, generator: torch.Generator
) -> Tensor:
    """``(k, d)`` noise on ``coords`` only, summing to zero over the rows, of RMS norm ``||b|| sqrt(1/alpha^2 - 1)``.

    ``b`` is the mean of ``rows``; a row ``b + mask`` with a mask orthogonal to
    ``b`` has cosine ``alpha`` to ``b``. With fewer than two rows the masks are
    zero (one row cannot hide in a crowd of its own).
    """
    k, d = rows.shape
    masks = rows.new_zeros(k, d)
    if k < 2 or coords.numel() == 0:
        return masks
    noise = gaussian_like((k, coords.numel()), generator=generator, like=rows)
    noise = noise - noise.mean(dim=0, keepdim=True)
    size = float(torch.linalg.vector_norm(rows.mean(dim=0))) * math.sqrt(max(1.0 / alpha**2 - 1.0, 0.0))
    rms = torch.sqrt((row_norms(noise) ** 2).mean()).clamp_min(1e-30)
    noise = noise * (size / rms)  # one common factor keeps the zero sum
    masks[:, coords] = noise
    return masks


class ThreeDFedParams(TriggerParams):
    """Parameters of ``three_dfed``: the backdoor trigger plus 3DFed's knobs."""

    #: Clean samples plus backdoored copies (Bagdasaryan et al.'s batches).
    poison_mode: Literal["replace", "append"] = "append"
    #: The server's norm bound if the attacker knows it; else the median norm of its own rows.
    norm_bound: float | None = Field(None, gt=0.0)
    #: Largest factor a small backdoor row is scaled up by.
    scale_cap: float = Field(1.0, ge=1.0, le=1e6)
    #: Share of coordinates (the least changed ones) that carry the noise masks.
    mask_fraction: float = Field(0.5, ge=0.0, le=1.0)
    #: Lower end of the noise level alpha's draw (the target cosine to the backdoor direction).
    alpha_min: float = Field(0.9, gt=0.0, lt=1.0)
    #: Starting alpha.
    alpha: float = Field(0.99, gt=0.0, lt=1.0)
    #: Decoy rows are the mean backdoor row times this.
    decoy_scale: float = Field(3.0, gt=0.0, le=1e6)
    #: Indicator marker: this times the row's largest absolute coordinate.
    indicator_scale: float = Field(1.0, gt=0.0, le=1e6)
    #: A row is rejected when its feedback is at most this share of 1/n.
    reject_below: float = Field(0.1, gt=0.0, lt=1.0)


@register_attack(
    "three_dfed",
    description="Adaptive covert backdoor: indicator feedback, decoy models, zero-sum noise masks, norm clipping.",
    params=ThreeDFedParams,
    reference="Li et al. 2023, 3DFed: Adaptive and Extensible Framework for Covert Backdoor Attack in FL (IEEE S&P).",
    variant="indicators and masks on the least-moved coordinates (first-order stand-in for low curvature); "
            "drawn zero-sum masks sized to a target cosine; decoys = scaled backdoor mean; one group; no weak-DP test",
    tags=("stochastic", "stateful"),
)
class ThreeDFed(TriggerAttack):
    """3DFed's adaptive loop over backdoor-trained rows (stateful across rounds)."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL

    params: ThreeDFedParams

    def __init__(self, params: ThreeDFedParams, *, num_classes: int, input_shape: tuple[int, ...],
                 collude: bool = False) -> None:
        super().__init__(params, num_classes=num_classes, input_shape=input_shape, collude=collude)
        self.alpha = float(params.alpha)
        self.num_decoy = 0
        self.last_global: Tensor | None = None
        self.indicators: list[int] = []
        self.markers: list[float] = []
        self.decoys: list[bool] = []
        self.last_n = 0
        self.last_status: list[Status] = []

    # -- feedback and tuning ---------------------------------------------------------
    def read_feedback(self, ctx: AttackContext, w: Tensor) -> list[Status]:
        """The previous round's rows' fate, from the indicators in the global model's change."""
        if self.last_global is None or not self.indicators:
            return []
        change = w - self.last_global.to(w)
        fb = indicator_feedback(change, self.indicators, self.markers, ctx.server_lr)
        return classify_feedback(fb, self.params.reject_below / max(self.last_n, 1))

    def tune(self, status: list[Status], m: int, generator: torch.Generator) -> None:
        """Algorithms 3 and 4 (one group): adapt the number of decoys and alpha to the feedback."""
        if not status:
            return
        backdoor = [s for s, d in zip(status, self.decoys, strict=True) if not d]
        decoy = [s for s, d in zip(status, self.decoys, strict=True) if d]
        self.num_decoy = max(self.num_decoy - decoy.count("accepted"), 0)
        if "accepted" not in backdoor and "clipped" not in backdoor and "accepted" not in decoy:
            self.num_decoy += 1
        self.num_decoy = min(self.num_decoy, max(m - 1, 0))
        if backdoor and backdoor.count("accepted") < 0.8 * len(backdoor):
            draw = float(uniform_like((1,), generator=generator, like=torch.zeros(1))[0])
            self.alpha = min(max(self.params.alpha_min + (1.0 - self.params.alpha_min) * draw, 0.01), 0.99)

    # -- the rows ----------------------------------------------------------------------
    def craft(self, ctx: AttackContext) -> Tensor:
        """Backdoor rows with masks, then decoys, each with an indicator."""
        own = ctx.own_updates
        m, d = own.shape
        w = ctx.global_params.detach().to(own)
        change = (w - self.last_global.to(w)) if self.last_global is not None else torch.zeros_like(w)
        self.last_status = self.read_feedback(ctx, w)
        self.tune(self.last_status, m, ctx.generator)
        n_decoy = min(self.num_decoy, max(m - 1, 0))
        reference = self.params.norm_bound if self.params.norm_bound is not None else float(row_norms(own).median())
        backdoor = norm_clip(own[: m - n_decoy], reference, self.params.scale_cap)
        order = low_importance(importance(own, change), d)
        indicators = order[:m]
        mask_coords = order[m: m + int(self.params.mask_fraction * d)]
        rows = backdoor + zero_sum_masks(backdoor, mask_coords, self.alpha, ctx.generator)
        if n_decoy:
            decoy = backdoor.mean(dim=0) * self.params.decoy_scale
            rows = torch.cat([rows, decoy.expand(n_decoy, d)])
        rows = rows.clone()
        markers = self.params.indicator_scale * rows.abs().amax(dim=1).clamp_min(1e-12)
        rows[torch.arange(m, device=rows.device), indicators] = markers
        self.last_global, self.last_n = w.clone(), ctx.num_participants
        self.indicators, self.markers = indicators.tolist(), markers.tolist()
        self.decoys = [False] * (m - n_decoy) + [True] * n_decoy
        return rows

    def state_dict(self) -> dict[str, Any]:
        """What the attacker remembers across rounds (saved in checkpoints)."""
        return {"alpha": self.alpha, "num_decoy": self.num_decoy, "last_global": self.last_global,
                "indicators": list(self.indicators), "markers": list(self.markers), "decoys": list(self.decoys),
                "last_n": self.last_n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.alpha, self.num_decoy = float(state["alpha"]), int(state["num_decoy"])
        self.last_global = state["last_global"]
        self.indicators = [int(i) for i in state["indicators"]]
        self.markers = [float(v) for v in state["markers"]]
        self.decoys = [bool(v) for v in state["decoys"]]
        self.last_n = int(state["last_n"])
