"""Non-finite updates (NaN, +Inf, -Inf), to test robustness to broken clients.

Not from a paper: a fault-injection probe. Each malicious row has
:math:`\\mathrm{round}(q \\cdot d)` of its :math:`d` coordinates (``q`` =
``attack.coordinate_fraction``, 1 by default) set to ``attack.value``; the
others are zero (the clients do not train, ``trains = False``). Which coordinates is drawn per row
from the attack's generator, or once for all rows with ``attack.collude``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack

_VALUES = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def nonfinite_rows(
    m: int, d: int, *, value: float, fraction: float, shared: bool, generator: torch.Generator, like: Tensor
) -> Tensor:
    """``(m, d)`` zero rows with ``round(fraction * d)`` coordinates of each set to ``value``.

    The coordinates are drawn per row, or once for all rows when ``shared``;
    the result has ``like``'s dtype and device.
    """
    rows = like.new_zeros(m, d)
    k = round(fraction * d)
    if k == d:
        return torch.full_like(rows, value)
    keys = torch.rand((1 if shared else m, d), generator=generator, device=generator.device)
    chosen = keys.argsort(dim=1)[:, :k].to(rows.device)
    mask = torch.zeros(chosen.shape[0], d, dtype=torch.bool, device=rows.device)
    mask.scatter_(1, chosen, True)
    return torch.where(mask.expand(m, d), torch.tensor(value, dtype=rows.dtype, device=rows.device), rows)


class NonFiniteParams(AttackParams):
    """Parameters of ``nonfinite``."""

    #: ``nan``, ``inf`` or ``-inf``.
    value: Literal["nan", "inf", "-inf"] = "nan"
    #: Share of coordinates set to the value in each row.
    coordinate_fraction: float = Field(1.0, gt=0.0, le=1.0)


@register_attack(
    "nonfinite",
    tags=("sends_nonfinite",),
    description="Send NaN or +/-Inf in a share of coordinates (robustness probe).",
    params=NonFiniteParams,
    reference="Fault injection (no paper): round(coordinate_fraction * d) coordinates set to NaN/Inf.",
)
class NonFinite(Attack):
    """Rows with NaN or infinite coordinates."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL
    trains = False


    def craft(self, ctx: AttackContext) -> Tensor:
        """Zero rows with the chosen coordinates non-finite."""
        m, d = ctx.own_updates.shape
        return nonfinite_rows(
            m,
            d,
            like=ctx.own_updates,
            value=_VALUES[self.params.value],
            fraction=self.params.coordinate_fraction,
            shared=self.collude,
            generator=ctx.generator,
        )
