"""Robust learning rate (RLR): flip the server's step on coordinates where clients disagree in sign.

Reference: Mustafa Safa Ozdayi, Murat Kantarcioglu and Yulia R. Gel,
"Defending against Backdoors in Federated Learning with Robust Learning Rate",
AAAI 2021.

For each coordinate :math:`j` the server counts the signs of the clients'
updates and uses the learning rate :math:`+\\eta` where enough clients agree,
:math:`-\\eta` where they do not:

.. math::

   \\eta_j = \\begin{cases} +\\eta & \\left|\\sum_i \\operatorname{sgn}(u_{ij})\\right| \\ge \\theta \\\\
                            -\\eta & \\text{otherwise} \\end{cases}
   \\qquad g_j = \\eta_j \\cdot \\bar u_j

where :math:`\\bar u` is the sample-weighted mean of the updates (FedAvg) and
:math:`\\eta` the server learning rate, applied by the server step. A backdoor
lives in coordinates that only the attackers move, where the honest majority
has no common sign; moving against the mean there undoes it.

Variant: each client has one vote (the sign sum is unweighted, as in the paper);
``defense.rlr_threshold`` is :math:`\\theta`, by default :math:`f + 1` for the
assumed number ``f`` of Byzantine rows, the paper's guidance that
:math:`\\theta` exceed the number of corrupt agents. A threshold above ``n``
flips every coordinate, so it is refused.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.mean import weighted_mean
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import enforce
from fedpoison.registry import Requirement


def sign_vote_margin(updates: Tensor) -> Tensor:
    """``(d,)`` the absolute sum of the rows' signs per coordinate: how many more clients agree than not."""
    return torch.sign(updates).sum(dim=0).abs()


def robust_lr_signs(updates: Tensor, threshold: int) -> Tensor:
    """``(d,)`` +1 where at least ``threshold`` more rows agree in sign than disagree, else -1."""
    ones = torch.ones(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return torch.where(sign_vote_margin(updates) >= threshold, ones, -ones)


class RLRParams(BaseModel):
    """Parameters of ``rlr``."""

    model_config = ConfigDict(extra="forbid")
    #: theta: coordinates where |sum of signs| is below it get the flipped step; ``None`` means f + 1.
    rlr_threshold: int | None = Field(None, ge=1)


def _theta(f: int, params: object) -> int:
    theta = getattr(params, "rlr_threshold", None)
    return int(theta) if theta is not None else f + 1


#: theta votes must be possible among the n rows.
RLR_REQUIRES = Requirement("n >= theta (theta = rlr_threshold, or f + 1)", lambda n, f, p: n >= _theta(f, p))


@RULES.register(
    "rlr",
    description="Robust learning rate: the FedAvg step, flipped on coordinates where fewer than theta more "
    "clients agree in sign than disagree.",
    params=RLRParams,
    reference="Ozdayi, Kantarcioglu & Gel 2021, Defending against Backdoors in FL with Robust Learning Rate (AAAI).",
    variant="one vote per client; theta = defense.rlr_threshold, default f + 1",
    requires=RLR_REQUIRES,
    filters=False,
)
class RobustLearningRate:
    """FedAvg whose step is negated per coordinate where the sign vote falls short of ``theta``."""

    def __init__(self, params: RLRParams, *, f: int = 0) -> None:
        self.params = params
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        theta = _theta(self.f, self.params)
        enforce(RLR_REQUIRES, "rlr", n, self.f, self.params, theta=theta)
        mean, w = weighted_mean(updates, weights)
        signs = robust_lr_signs(updates, theta)
        flipped = float((signs < 0).sum())
        return AggregationResult(signs * mean, w, torch.ones(n, dtype=torch.bool, device=updates.device),
                                 info={"rlr_flipped": flipped, "rlr_threshold": float(theta)})
