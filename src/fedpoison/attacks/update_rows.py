"""How attacks turn what they see into rows to send.

- the benign reference (:func:`benign_reference`): this round's honest rows
  when the threat model shows them, else the attackers' own rows;
- repeated and joint rows, for attackers that all send the same row.

The maths attacks compute from those rows (norms, distances, Krum scores,
per-coordinate mean and standard deviation, noise) is :mod:`fedpoison.core`'s,
the same that the server's rules and auditors call.
"""

from __future__ import annotations

from torch import Tensor

from fedpoison.attacks.base import AttackContext


def benign_reference(ctx: AttackContext) -> Tensor:
    """The benign-looking rows the attackers know: honest rows if visible and non-empty, else their own.

    Fang et al.'s partial-knowledge attacks use the attackers' own benign
    updates in place of the honest ones; this is that substitution.
    """
    honest = ctx.honest_updates
    if honest is not None and honest.shape[0] > 0:
        return honest
    return ctx.own_updates


def repeat_row(row: Tensor, m: int) -> Tensor:
    """``(m, d)``: ``row`` repeated ``m`` times (a new tensor, not a view)."""
    return row.reshape(1, -1).repeat(m, 1)


def joint_rows(rows: Tensor) -> Tensor:
    """Colluding rows: the mean of ``rows`` repeated once per row."""
    return repeat_row(rows.mean(dim=0), rows.shape[0])
