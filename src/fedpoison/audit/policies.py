"""What an auditor does with its flags: flag only, exclude, quarantine, reputation.

The policies are pure functions over small per-client state tensors of length
``N`` (the federation size, indexed by client id); the auditor class holds the
state and calls them. None of them ever sees ground truth.

- ``flag``: record the flags, change nothing.
- ``exclude``: drop this round's flagged rows before aggregation.
- ``quarantine``: drop the flagged rows, and keep each flagged client out of
  the next :math:`q_k` rounds *it would have joined* (rounds in which it is
  sampled), then readmit it. Its :math:`k`-th offence gets

  .. math:: q_k = \\min\\left(\\lceil q\\, g^{\\,k-1} \\rceil,\\ q_{\\max}\\right)

  with :math:`q` = ``quarantine_rounds``, growth :math:`g` =
  ``quarantine_growth`` (1 keeps it constant, 2 doubles it for each repeat
  offence) and cap :math:`q_{\\max}` = ``max_quarantine``. Counting only the
  rounds a client is sampled in makes the sentence the same under any
  participation rate: a client sampled every tenth round is not released
  after sitting out rounds it would have missed anyway.
- ``reputation``: each client's reputation :math:`r \\in [0, 1]` starts at 1
  (trusted). Each round it takes part, it first recovers towards trust,
  :math:`r \\leftarrow 1 - (1 - r)(1 - \\rho)` with :math:`\\rho` =
  ``reputation_recovery``, then, if flagged, drops,
  :math:`r \\leftarrow \\pi\\, r` with :math:`\\pi` = ``reputation_penalty``.
  Rows of clients with :math:`r` below ``reputation_floor`` are excluded;
  with ``reputation_mode: weight`` the others' FedAvg weights are also
  multiplied by :math:`r`. This scheme (multiplicative penalty, exponential
  forgiveness, one scalar per client) is fedpoison's own simple design, not a
  paper's; reputation-based client selection in FL is surveyed by e.g. Kang et
  al. 2019, 'Incentive Mechanism for Reliable Federated Learning' (IEEE IoT-J).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

Policy = Literal["flag", "exclude", "quarantine", "reputation"]
POLICIES: tuple[str, ...] = ("flag", "exclude", "quarantine", "reputation")


@dataclass
class PolicyState:
    """Per-client state of the policies, indexed by client id (CPU tensors).

    Attributes
    ----------
    quarantine_left:
        int64, how many more sampled rounds each client sits out.
    offences:
        int64, how many times each client was flagged (and sentenced).
    reputation:
        float32 in ``[0, 1]``, 1 is fully trusted.
    """

    quarantine_left: Tensor
    offences: Tensor
    reputation: Tensor

    @classmethod
    def fresh(cls, num_clients: int) -> PolicyState:
        """Everyone admitted, no offences, full trust."""
        if num_clients < 1:
            raise ValueError(f"PolicyState: expected num_clients >= 1, got {num_clients}")
        return cls(
            torch.zeros(num_clients, dtype=torch.int64),
            torch.zeros(num_clients, dtype=torch.int64),
            torch.ones(num_clients, dtype=torch.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, cloned."""
        return {"quarantine_left": self.quarantine_left.clone(), "offences": self.offences.clone(),
                "reputation": self.reputation.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PolicyState:
        """Inverse of :meth:`state_dict` (tensors may come back on any device; the state lives on CPU)."""
        return cls(
            torch.as_tensor(state["quarantine_left"]).to("cpu", torch.int64).clone(),
            torch.as_tensor(state["offences"]).to("cpu", torch.int64).clone(),
            torch.as_tensor(state["reputation"]).to("cpu", torch.float32).clone(),
        )


def quarantine_length(offences: Tensor, base: int, growth: float = 1.0, cap: int | None = None) -> Tensor:
    """Sentence for each client's ``offences``-th offence: :math:`\\lceil q g^{k-1} \\rceil`, capped.

    Example
    -------
    >>> quarantine_length(torch.tensor([1, 2, 3, 4]), base=2, growth=2.0, cap=10)
    tensor([ 2,  4,  8, 10])
    """
    k = offences.clamp_min(1).to(torch.float64)
    length = torch.ceil(base * torch.pow(torch.tensor(growth, dtype=torch.float64), k - 1) - 1e-9)
    if cap is not None:
        length = length.clamp_max(cap)
    length = length.clamp_max(2**62)  # growth**k overflows float range for long runs
    return length.to(torch.int64)


def admit(quarantine_left: Tensor, client_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(mask, new_left)``: who of the sampled ``client_ids`` may join, and the updated counters.

    A sampled client with rounds left to sit out is refused, and this round
    counts towards its sentence. ``client_ids`` must be distinct.
    """
    ids = client_ids.cpu().long()
    left = quarantine_left[ids]
    mask = left <= 0
    new_left = quarantine_left.clone()
    new_left[ids] = (left - 1).clamp_min(0)
    return mask, new_left


def sentence(
    quarantine_left: Tensor, offences: Tensor, client_ids: Tensor, flagged: Tensor, *,
    base: int, growth: float = 1.0, cap: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(new_left, new_offences)`` after sentencing the flagged ``client_ids``.

    Each flagged client's offence count goes up by one and it is quarantined
    for :func:`quarantine_length` of its new count (a new sentence replaces,
    never shortens, one still running).
    """
    ids = client_ids.cpu().long()[flagged.cpu()]
    new_off = offences.clone()
    new_left = quarantine_left.clone()
    if ids.numel():
        new_off[ids] += 1
        new_left[ids] = torch.maximum(new_left[ids], quarantine_length(new_off[ids], base, growth, cap))
    return new_left, new_off


def update_reputation(
    reputation: Tensor, client_ids: Tensor, flagged: Tensor, *, recovery: float, penalty: float,
) -> Tensor:
    """New reputation after a round: participants recover towards 1, flagged ones are penalised.

    .. math:: r \\leftarrow \\pi^{[\\text{flagged}]} \\left(1 - (1 - r)(1 - \\rho)\\right)

    Example
    -------
    >>> update_reputation(torch.tensor([1.0, 0.5, 0.5]), torch.tensor([0, 1]),
    ...                   torch.tensor([True, False]), recovery=0.5, penalty=0.25)
    tensor([0.2500, 0.7500, 0.5000])
    """
    ids = client_ids.cpu().long()
    r = reputation[ids]
    r = 1.0 - (1.0 - r) * (1.0 - recovery)
    r = torch.where(flagged.cpu(), r * penalty, r)
    out = reputation.clone()
    out[ids] = r.clamp(0.0, 1.0)
    return out


def decide(
    policy: str, flagged: Tensor, *, reputation: Tensor | None = None, floor: float = 0.0,
    mode: Literal["weight", "exclude"] = "exclude",
) -> tuple[Tensor, Tensor]:
    """``(keep, weight)`` for this round's rows under ``policy``.

    ``reputation`` is the participants' (already updated) reputation, needed
    by ``reputation`` only.
    """
    ones = torch.ones(flagged.shape[0], dtype=torch.float32, device=flagged.device)
    if policy == "flag":
        return torch.ones_like(flagged), ones
    if policy in ("exclude", "quarantine"):
        return ~flagged, ones
    if policy == "reputation":
        if reputation is None:
            raise ValueError("decide: policy 'reputation' needs the participants' reputation")
        r = reputation.to(flagged.device, torch.float32)
        keep = r >= floor
        weight = r if mode == "weight" else ones
        return keep, torch.where(keep, weight, torch.zeros_like(weight))
    raise ValueError(f"decide: unknown policy {policy!r} (expected one of: {', '.join(POLICIES)})")


class PolicyAdmission:
    """The ``admit`` hook, the policy decision, the client-id check and policy restore.

    Shared by every auditor with a :class:`PolicyState`.

    Subclasses set ``params`` (with a ``policy`` field), ``policy`` and ``num_clients``.
    """

    params: Any
    policy: PolicyState
    num_clients: int

    def admit(self, round: int, client_ids: Tensor) -> Tensor:
        """Bool mask over the sampled ``client_ids``: False for quarantined clients."""
        self._check_ids(client_ids)
        if self.params.policy != "quarantine":
            return torch.ones(client_ids.shape[0], dtype=torch.bool, device=client_ids.device)
        mask, self.policy.quarantine_left = admit(self.policy.quarantine_left, client_ids)
        return mask.to(client_ids.device)

    def _check_ids(self, ids: Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_clients):
            raise ValueError(f"client ids: expected values in [0, {self.num_clients - 1}], "
                             f"got {ids.min().item()}..{ids.max().item()}")

    def apply_policy(self, ids: Tensor, flagged: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Pass a round's flags through the policy: keep, weight, and the rows' reputation (or None).

        Under ``reputation`` the flagged rows lose reputation and the others
        recover; under ``quarantine`` the flagged clients are sentenced. Every
        auditor with a :class:`PolicyState` decides its rows here, whatever
        computed its flags.
        """
        p = self.params
        rep = None
        if p.policy == "reputation":
            self.policy.reputation = update_reputation(self.policy.reputation, ids, flagged,
                                                       recovery=p.reputation_recovery, penalty=p.reputation_penalty)
            rep = self.policy.reputation[ids]
        if p.policy == "quarantine":
            self._sentence(ids, flagged)
        keep, weight = decide(p.policy, flagged, reputation=rep, floor=p.reputation_floor, mode=p.reputation_mode)
        return keep, weight, rep

    def _sentence(self, ids: Tensor, flagged: Tensor) -> None:
        """Quarantine the flagged clients among ``ids`` (sentences grow with repeated offences)."""
        p = self.params
        self.policy.quarantine_left, self.policy.offences = sentence(
            self.policy.quarantine_left, self.policy.offences, ids, flagged,
            base=p.quarantine_rounds, growth=p.quarantine_growth, cap=p.max_quarantine,
        )

    def _load_policy(self, state: dict[str, Any]) -> None:
        """Restore ``policy`` from a state dict; the federation size must match."""
        policy = PolicyState.from_state_dict(state)
        if policy.quarantine_left.shape[0] != self.num_clients:
            raise ValueError(f"load_state_dict: expected state for {self.num_clients} clients, "
                             f"got {policy.quarantine_left.shape[0]}")
        self.policy = policy
