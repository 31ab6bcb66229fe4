"""Min-Max and Min-Sum: the AGR-agnostic attacks of Shejwalkar & Houmansadr.

Reference: Shejwalkar & Houmansadr 2021, 'Manipulating the Byzantine:
Optimizing Model Poisoning Attacks and Defenses for Federated Learning'
(NDSS), Sec. IV-C (AGR-agnostic attacks) and Algorithm 1. Over the benign
updates :math:`\\nabla_{i \\in [k]}` with mean :math:`\\nabla^b`, every
malicious client sends

.. math:: \\nabla^m = \\nabla^b + \\gamma\\, \\nabla^p

with perturbation :math:`\\nabla^p` (``attack.direction``):

- ``unit_vec``: inverse unit vector, :math:`-\\nabla^b / \\|\\nabla^b\\|_2`;
- ``std``: inverse standard deviation, :math:`-\\sigma` (per coordinate,
  Bessel-corrected);
- ``sign``: inverse sign, :math:`-\\operatorname{sign}(\\nabla^b)`;

and the largest :math:`\\gamma` that keeps the crafted row inside the benign
cloud:

- **Min-Max**: :math:`\\max_i \\|\\nabla^m - \\nabla_i\\|_2 \\le \\max_{i,j} \\|\\nabla_i - \\nabla_j\\|_2`;
- **Min-Sum**: :math:`\\sum_i \\|\\nabla^m - \\nabla_i\\|_2^2 \\le \\max_i \\sum_j \\|\\nabla_i - \\nabla_j\\|_2^2`.

:math:`\\gamma` is found by Algorithm 1's search: start at
:math:`\\gamma_{init}` (``attack.gamma_init``, 10) with step
:math:`\\gamma_{init}/2`; while :math:`|\\gamma_{succ} - \\gamma| > \\tau`
(``attack.tau``, :math:`10^{-5}`): if the condition holds, record
:math:`\\gamma_{succ} = \\gamma` and move up by the step, else move down by
the step; halve the step. :math:`\\gamma_{succ}` (0 if no :math:`\\gamma`
passed) is used. Needs the honest updates (``omniscient``); the malicious
clients do not train.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import benign_reference, repeat_row
from fedpoison.core.rows import coordinate_mean_std, cross_sq_distances

Direction = Literal["unit_vec", "std", "sign"]
Objective = Literal["min_max", "min_sum"]


def perturbation(benign: Tensor, direction: Direction) -> Tensor:
    """``(d,)`` perturbation :math:`\\nabla^p` of the benign rows (module docstring)."""
    mean, std = coordinate_mean_std(benign)
    if direction == "unit_vec":
        norm = torch.linalg.vector_norm(mean)
        return -mean / norm if float(norm) > 0 else torch.zeros_like(mean)
    if direction == "std":
        return -std
    if direction == "sign":
        return -torch.sign(mean)
    raise ValueError(f"perturbation: unknown direction {direction!r}")


def search_gamma(ok: Callable[[float], bool], *, gamma_init: float, tau: float) -> float:
    """Algorithm 1's search for the largest :math:`\\gamma` with ``ok(gamma)`` true.

    Example
    -------
    >>> round(search_gamma(lambda g: g <= 3.0, gamma_init=10.0, tau=1e-6), 4)
    3.0
    """
    gamma, step, succ = gamma_init, gamma_init / 2.0, 0.0
    while abs(succ - gamma) > tau:
        if ok(gamma):
            succ = gamma
            gamma += step
        else:
            gamma -= step
        step /= 2.0
    return succ


def min_max_condition(benign: Tensor, objective: Objective) -> Callable[[Tensor], bool]:
    """The check ``row -> bool`` of Min-Max or Min-Sum against the benign rows."""
    b64 = benign.double()  # float64: the search compares distances to a limit many times
    d2 = cross_sq_distances(b64, b64)
    if objective == "min_max":
        limit = float(d2.max())

        def ok(row: Tensor) -> bool:
            return float(cross_sq_distances(row[None].double(), b64).max()) <= limit

    else:
        limit = float(d2.sum(dim=1).max())

        def ok(row: Tensor) -> bool:
            return float(cross_sq_distances(row[None].double(), b64).sum()) <= limit

    return ok


def min_max_update(
    benign: Tensor, *, objective: Objective, direction: Direction, gamma_init: float, tau: float
) -> tuple[Tensor, float]:
    """``(d,)`` crafted row :math:`\\nabla^b + \\gamma \\nabla^p` and the :math:`\\gamma` found."""
    mean = benign.mean(dim=0)
    pert = perturbation(benign, direction)
    ok_row = min_max_condition(benign, objective)
    gamma = search_gamma(lambda g: ok_row(mean + g * pert), gamma_init=gamma_init, tau=tau)
    return mean + gamma * pert, gamma


class MinMaxParams(AttackParams):
    """Parameters of ``min_max`` and ``min_sum``."""

    #: Perturbation: ``unit_vec`` (inverse unit vector), ``std`` (inverse std) or ``sign`` (inverse sign).
    direction: Direction = "std"
    #: Algorithm 1's initial gamma.
    gamma_init: float = Field(10.0, gt=0.0)
    #: Algorithm 1's stopping threshold.
    tau: float = Field(1e-5, gt=0.0)


class _MinMaxBase(Attack):
    kind = AttackKind.UPDATE
    knowledge = Knowledge.OMNISCIENT
    trains = False
    objective: Objective

    def __init__(
        self,
        params: MinMaxParams,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        collude: bool = False,
    ) -> None:
        self.params = params
        self.last_gamma: float | None = None

    def craft(self, ctx: AttackContext) -> Tensor:
        """One crafted row, sent by every malicious client."""
        row, gamma = min_max_update(
            benign_reference(ctx),
            objective=self.objective,
            direction=self.params.direction,
            gamma_init=self.params.gamma_init,
            tau=self.params.tau,
        )
        self.last_gamma = gamma
        return repeat_row(row.to(ctx.own_updates.dtype), ctx.num_malicious)


@register_attack(
    "min_max",
    description="Mean + gamma * perturbation, gamma maximal with max distance <= max benign pairwise distance.",
    params=MinMaxParams,
    reference=(
        "Shejwalkar & Houmansadr 2021, Manipulating the Byzantine (NDSS), AGR-agnostic Min-Max, "
        "Algorithm 1 gamma search, unit_vec/std/sign perturbations."
    ),
)
class MinMax(_MinMaxBase):
    """Min-Max attack."""

    objective: Objective = "min_max"


@register_attack(
    "min_sum",
    description="Mean + gamma * perturbation, gamma maximal with sum of sq. distances <= max benign sum.",
    params=MinMaxParams,
    reference=(
        "Shejwalkar & Houmansadr 2021, Manipulating the Byzantine (NDSS), AGR-agnostic Min-Sum, "
        "Algorithm 1 gamma search, unit_vec/std/sign perturbations."
    ),
)
class MinSum(_MinMaxBase):
    """Min-Sum attack."""

    objective: Objective = "min_sum"
