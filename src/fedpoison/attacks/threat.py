"""The threat model's rules, written once: who attacks, when, and what they must send.

fedpoison's round loop (:mod:`fedpoison.simulation.loop`) and the Flower
adapter (:class:`fedpoison.integrations.flower.MaliciousClient`) both read
these functions, so an attack configured the same way makes the same clients
malicious, fires in the same rounds and is held to the same output contract
in a simulation and in a Flower deployment.

- **Who:** :func:`malicious_count` clients (``attack.count``, else
  ``round(attack.fraction * N)``), chosen by :func:`choose_malicious` with a
  permutation seeded by ``(seed, "malicious")``.
- **Fake clients:** :func:`fake_client_ids`, ``attack.fake_clients`` clients
  that own no data, added after the genuine ones (ids ``N .. N + F - 1``),
  all malicious; each claims :func:`fake_client_samples` samples.
- **When:** :func:`attack_active`, the schedule ``attack.start_round``,
  ``end_round``, ``every`` and ``probability`` (one seeded draw per round,
  ``(seed, "schedule", round)``, so all attackers fire together).
- **What:** :func:`check_crafted`, the ``(m, d)`` tensor an attack's
  ``craft`` must return.
- **What they know:** :class:`~fedpoison.attacks.base.Knowledge`, ordered
  ``local < omniscient < defense_aware``; :func:`sees_honest_updates`.

Ground truth (who is malicious) drives the attack and the metrics only; it
never reaches a defense or an auditor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fedpoison.attacks.base import Knowledge
from fedpoison.errors import UpdateError
from fedpoison.seeding import generator

if TYPE_CHECKING:
    from fedpoison.config import AttackSection

__all__ = ["attack_active", "check_crafted", "choose_malicious", "fake_client_ids", "fake_client_samples",
           "malicious_count", "sees_honest_updates"]


def malicious_count(attack: AttackSection, num_clients: int) -> int:
    """How many of ``num_clients`` clients are malicious: ``attack.count``, else ``round(fraction * N)``.

    Zero for ``attack.name: none``.

    Example
    -------
    >>> from fedpoison.config import AttackSection
    >>> malicious_count(AttackSection(name="sign_flip", fraction=0.25), 10)
    2
    """
    if attack.name == "none":
        return 0
    if attack.count is not None:
        return attack.count
    return round(attack.fraction * num_clients)


def choose_malicious(num_clients: int, count: int, seed: int) -> Tensor:
    """``(count,)`` sorted int64 ids of the malicious clients among ``range(num_clients)`` (CPU).

    The first ``count`` entries of a permutation drawn from ``(seed,
    "malicious")``: the same seed makes the same clients malicious wherever
    the run happens (``fedpoison run``, a grid worker, a Flower app).
    """
    if not 0 <= count <= num_clients:
        raise ValueError(f"choose_malicious: expected 0 <= count <= {num_clients}, got {count}")
    perm = torch.randperm(num_clients, generator=generator(seed, "malicious"))
    return torch.sort(perm[:count]).values


def fake_client_ids(num_clients: int, fake: int) -> Tensor:
    """``(fake,)`` int64 ids of the fake clients: they follow the ``num_clients`` genuine ones.

    Example
    -------
    >>> fake_client_ids(5, 2).tolist()
    [5, 6]
    """
    return torch.arange(num_clients, num_clients + fake, dtype=torch.int64)


def fake_client_samples(train_size: int, num_clients: int) -> int:
    """The sample count a fake client claims: the average genuine client's, ``round(train_size / N)``.

    A fake client owns no data, but the server weighs rows by the sample count
    each client reports. Claiming the average keeps a fake row neither heavier
    nor lighter than a typical genuine one, and needs only what the attacker
    can know publicly (the federation's size and data volume). At least 1.

    Example
    -------
    >>> fake_client_samples(1000, 20)
    50
    """
    return max(1, round(train_size / num_clients))


def attack_active(attack: AttackSection, seed: int, rnd: int) -> bool:
    """Whether the attack's schedule fires in (zero-based) round ``rnd``.

    Fires from ``start_round`` to ``end_round`` (inclusive, open-ended when
    unset), every ``every`` rounds counted from ``start_round``, and then with
    ``probability`` by one draw from ``(seed, "schedule", rnd)``. Never for
    ``attack.name: none``.

    Examples
    --------
    >>> from fedpoison.config import AttackSection
    >>> a = AttackSection(name="sign_flip", start_round=2, end_round=7, every=3)
    >>> [r for r in range(10) if attack_active(a, 0, r)]
    [2, 5]
    """
    if attack.name == "none" or rnd < attack.start_round:
        return False
    if attack.end_round is not None and rnd > attack.end_round:
        return False
    if (rnd - attack.start_round) % attack.every:
        return False
    if attack.probability < 1.0:
        draw = torch.rand((), generator=generator(seed, "schedule", rnd))
        return bool(draw < attack.probability)
    return True


def sees_honest_updates(knowledge: Knowledge | str) -> bool:
    """Whether an attacker with this knowledge is shown the round's honest updates (omniscient and up)."""
    return Knowledge(knowledge).level >= Knowledge.OMNISCIENT.level


def check_crafted(crafted: object, m: int, d: int, *, attack: str) -> Tensor:
    """``crafted`` if it is an ``(m, d)`` tensor, else an :class:`~fedpoison.errors.UpdateError` naming the attack.

    ``m`` is the number of attacking rows this round (1 on a Flower node),
    ``d`` the model's parameter count.
    """
    if not isinstance(crafted, Tensor) or tuple(crafted.shape) != (m, d):
        got = tuple(crafted.shape) if isinstance(crafted, Tensor) else type(crafted).__name__
        raise UpdateError(f"attack '{attack}': expected crafted updates of shape ({m}, {d}), got {got}")
    return crafted
