"""``audit_evasion``: as much damage as the auditor lets through.

fedpoison's own defense-aware attack on auditors, in the spirit of the
optimised attacks of Fang et al. 2020 ('Local Model Poisoning Attacks to
Byzantine-Robust Federated Learning', USENIX Security) and Shejwalkar &
Houmansadr 2021 ('Manipulating the Byzantine: Optimizing Model Poisoning
Attacks and Defenses for Federated Learning', NDSS): those search for the
largest malicious deviation that a given *aggregation rule* still accepts;
this one searches for the largest deviation that a given *auditor* still
accepts.

The auditors (``norm_mad``, ``multi_signal``; :mod:`fedpoison.audit.signals`)
score each row by robust z-scores (median / MAD over the round's rows) of up
to five signals: norm, cosine to the coordinate-wise median, distance to it,
Krum score and sign agreement with it, and flag a row whose score passes
``audit.threshold`` (3 by default). The attacker knows this round's honest
rows (omniscient) and crafts

.. math:: \\tilde u(\\gamma) = \\mu + \\gamma\\, p

with :math:`\\mu` the honest mean and :math:`p` the perturbation of Min-Max
(``attack.direction``: inverse unit vector, inverse standard deviation or
inverse sign), rescaled to the honest rows' median norm
(``attack.match_norm``, so that the norm always looks honest and
:math:`\\gamma` buys a change of direction only), sent by every malicious
row, with :math:`\\gamma` the largest
value (Shejwalkar & Houmansadr's halving search) for which, on the matrix the
server will see (honest rows and the :math:`m` crafted rows), every crafted
row's oriented robust z-score of every signal in ``attack.signals`` stays at
most ``attack.margin x attack.threshold``. The norm is held inside both tails
(an auditor may flag unusually small norms too, ``audit.tail: both``). The
z-scores are the auditors' own functions, so the attacker's view of a signal
is the server's.

Damage grows with :math:`\\gamma` (the row moves away from the honest
consensus, against the honest descent direction); the constraint keeps every
audited signal inside the range the auditor accepts. A row that passes every
signal separately passes ``multi_signal``'s combination (a mean or maximum of
the positive parts) and its history (an average of past scores), and passes
``norm_mad``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.min_max import Direction, perturbation, search_gamma
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import benign_reference, repeat_row
from fedpoison.audit.signals import SIGNAL_TAILS, Tail, compute_signals, oriented_z
from fedpoison.core.rows import row_norms

AuditedSignal = Literal["norm", "cosine", "distance", "krum", "sign_agreement"]
ALL_AUDITED: tuple[AuditedSignal, ...] = ("norm", "cosine", "distance", "krum", "sign_agreement")


def evasion_tails(signals: tuple[str, ...] | list[str]) -> dict[str, Tail]:
    """The tail the attacker keeps each signal inside: the auditor's, with the norm held in both."""
    return {s: ("both" if s == "norm" else SIGNAL_TAILS[s]) for s in signals}


def worst_z(honest: Tensor, crafted: Tensor, tails: dict[str, Tail]) -> float:
    """The largest oriented robust z-score of any crafted row on any signal, as an auditor computes it.

    The auditor sees the honest rows and the crafted rows together; medians
    and MADs are over all of them.
    """
    rows = torch.cat([honest, crafted])
    sig = compute_signals(rows, list(tails))
    k = honest.shape[0]
    worst = max(float(oriented_z(sig[name], tail)[k:].max()) for name, tail in tails.items())
    return worst


def candidate(mean: Tensor, pert: Tensor, gamma: float, norm: float | None) -> Tensor:
    """``(d,)`` :math:`\\mu + \\gamma p`, rescaled to L2 norm ``norm`` when given (and non-zero).

    Example
    -------
    >>> candidate(torch.tensor([3.0, 4.0]), torch.tensor([-1.0, 0.0]), 3.0, 10.0)
    tensor([ 0., 10.])
    """
    row = mean + gamma * pert
    if norm is None:
        return row
    size = torch.linalg.vector_norm(row)
    return row * (norm / size) if float(size) > 0 else row


def evasion_update(
    honest: Tensor, m: int, *, signals: tuple[str, ...] | list[str], limit: float, direction: Direction,
    gamma_init: float, tau: float, match_norm: bool = True,
) -> tuple[Tensor, float]:
    """``(d,)`` crafted row with the largest :math:`\\gamma` the auditor accepts, and :math:`\\gamma`.

    The row is :func:`candidate`'s :math:`\\mu + \\gamma p`, rescaled to the
    honest rows' median norm with ``match_norm``. ``limit`` is the highest
    oriented z-score allowed (``margin x threshold``). :math:`\\gamma = 0`
    (the honest mean) when even that is refused.
    """
    h = honest.double()
    mean = h.mean(dim=0)
    pert = perturbation(h, direction)
    tails = evasion_tails(signals)
    norm = float(row_norms(h).median()) if match_norm else None

    def ok(gamma: float) -> bool:
        return worst_z(h, repeat_row(candidate(mean, pert, gamma, norm), m), tails) <= limit

    gamma = search_gamma(ok, gamma_init=gamma_init, tau=tau)
    return candidate(mean, pert, gamma, norm).to(honest.dtype), gamma


class AuditEvasionParams(AttackParams):
    """Parameters of ``audit_evasion``."""

    #: The audited signals to stay inside (all that the auditors compute by default).
    signals: list[AuditedSignal] = Field(default_factory=lambda: list(ALL_AUDITED), min_length=1)
    #: The auditor's flagging threshold on the robust z-score (``audit.threshold``'s default).
    threshold: float = Field(3.0, gt=0.0, le=1e6)
    #: Share of the threshold to stay under (safety margin for the history and rounding).
    margin: float = Field(0.8, gt=0.0, le=1.0)
    #: Perturbation direction: inverse unit vector, inverse std or inverse sign of the honest mean.
    direction: Direction = "std"
    #: Rescale the crafted row to the honest rows' median norm (the norm then always looks honest,
    #: and gamma buys a change of direction only).
    match_norm: bool = True
    #: Initial gamma of the halving search.
    gamma_init: float = Field(10.0, gt=0.0, le=1e9)
    #: Stopping step of the halving search.
    tau: float = Field(1e-3, gt=0.0)


@register_attack(
    "audit_evasion",
    description="Mean + gamma * perturbation, gamma maximal with every audited signal's robust z under the auditor's threshold.",
    params=AuditEvasionParams,
    reference=(
        "fedpoison's own auditor-aware attack, after Fang et al. 2020 (USENIX Security) and Shejwalkar & "
        "Houmansadr 2021 (NDSS, Min-Max): the largest deviation the auditor still accepts."
    ),
    variant="one row mu + gamma p (rescaled to the honest median norm) for every attacker; constraint: oriented "
            "median/MAD z of norm (both tails), cosine, distance, Krum score and sign agreement <= margin x threshold "
            "over honest + crafted rows",
    tags=("fake_clients",),
)
class AuditEvasion(Attack):
    """The largest Min-Max-style deviation that keeps every audited signal in the accepted range."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.OMNISCIENT
    trains = False

    def __init__(self, params: AuditEvasionParams, *, num_classes: int, input_shape: tuple[int, ...],
                 collude: bool = False) -> None:
        super().__init__(params, num_classes=num_classes, input_shape=input_shape, collude=collude)
        self.last_gamma: float | None = None

    def craft(self, ctx: AttackContext) -> Tensor:
        """One row, sent by every malicious client."""
        honest = benign_reference(ctx)
        m = ctx.num_malicious
        if honest.shape[0] < 2:  # no honest range to stay inside: send the honest reference itself
            return repeat_row(honest.mean(dim=0).to(ctx.own_updates.dtype), m)
        row, self.last_gamma = evasion_update(
            honest, m, signals=self.params.signals, limit=self.params.margin * self.params.threshold,
            direction=self.params.direction, gamma_init=self.params.gamma_init, tau=self.params.tau,
            match_norm=self.params.match_norm,
        )
        return repeat_row(row.to(ctx.own_updates.dtype), m)
