"""Label flipping: malicious clients train on relabelled data.

Reference: Tolpegin et al. 2020, 'Data Poisoning Attacks Against Federated
Learning Systems' (ESORICS), source-to-target flipping; Fang et al. 2020
'Local Model Poisoning Attacks to Byzantine-Robust Federated Learning'
(label flipping :math:`y \\to C - 1 - y`). Four modes of the label map
:math:`\\pi: [C] \\to [C]`:

- ``reverse``: :math:`\\pi(y) = C - 1 - y` (Fang et al.'s variant);
- ``permutation``: a uniformly random permutation of the classes. Each
  malicious client draws its own from its poisoning generator, unless
  ``attack.permutation`` fixes one for all;
- ``all_to_one``: :math:`\\pi(y) = t` for every class;
- ``source_target``: :math:`\\pi(y) = t` for :math:`y` in the source classes,
  identity elsewhere (Tolpegin et al.'s targeted attack).

A sample is *eligible* when its label would change (:math:`\\pi(y) \\ne y`).
``attack.poison_fraction`` is the share of eligible samples whose label is
changed, :math:`\\mathrm{round}(p \\cdot |E|)` of them, drawn uniformly with
the client's poisoning generator; inputs are never touched.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams, check_class
from fedpoison.attacks.registry import register_attack
from fedpoison.core.draws import random_subset
from fedpoison.errors import ConfigError

LabelFlipMode = Literal["reverse", "permutation", "all_to_one", "source_target"]


def label_map(
    mode: LabelFlipMode,
    num_classes: int,
    *,
    target_class: int = 0,
    source_classes: tuple[int, ...] = (),
    permutation: Tensor | None = None,
) -> Tensor:
    """``(C,)`` int64 map :math:`\\pi` with ``pi[y]`` the poisoned label of class ``y``.

    ``permutation`` is required for mode ``permutation``.

    Example
    -------
    >>> label_map("reverse", 4).tolist()
    [3, 2, 1, 0]
    >>> label_map("source_target", 4, target_class=0, source_classes=(2,)).tolist()
    [0, 1, 0, 3]
    """
    classes = torch.arange(num_classes)
    if mode == "reverse":
        return num_classes - 1 - classes
    if mode == "permutation":
        if permutation is None:
            raise ValueError("label_map: mode 'permutation' needs a permutation")
        return permutation.to(torch.int64).clone()
    if mode == "all_to_one":
        return torch.full((num_classes,), target_class, dtype=torch.int64)
    if mode == "source_target":
        out = classes.clone()
        out[list(source_classes)] = target_class
        return out
    raise ValueError(f"label_map: unknown mode {mode!r}")


def flip_labels(y: Tensor, mapping: Tensor, *, fraction: float, generator: torch.Generator) -> Tensor:
    """A copy of ``y`` where ``round(fraction * |E|)`` eligible labels are mapped through ``mapping``.

    Eligible samples are those with ``mapping[y] != y``; which of them change is
    drawn uniformly with ``generator``.
    """
    mapped = mapping.to(y.device)[y]
    eligible = torch.nonzero(mapped != y).flatten()
    k = round(fraction * eligible.numel())
    chosen = eligible[random_subset(eligible.numel(), k, generator=generator, device=y.device)]
    out = y.clone()
    out[chosen] = mapped[chosen]
    return out


def random_permutation(num_classes: int, generator: torch.Generator) -> Tensor:
    """``(C,)`` int64 uniformly random permutation of the classes."""
    return torch.randperm(num_classes, generator=generator, device=generator.device).cpu()


class LabelFlipParams(AttackParams):
    """Parameters of ``label_flip``."""

    #: ``reverse`` (y -> C-1-y), ``permutation``, ``all_to_one`` or ``source_target``.
    mode: LabelFlipMode = "reverse"
    #: The class ``all_to_one`` and ``source_target`` relabel to.
    target_class: int = Field(0, ge=0)
    #: ``source_target``: the classes moved to the target.
    source_classes: list[int] = Field(default_factory=list)
    #: ``permutation``: a fixed permutation of ``range(C)`` shared by all attackers;
    #: by default each attacker draws its own.
    permutation: list[int] | None = None
    #: Share of the samples whose label the mode would change that are changed.
    poison_fraction: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_mode(self) -> LabelFlipParams:
        if self.mode == "source_target" and not self.source_classes:
            raise ValueError("attack.source_classes: mode 'source_target' needs at least one source class")
        if self.permutation is not None and self.mode != "permutation":
            raise ValueError(f"attack.permutation: only used by mode 'permutation', got mode {self.mode!r}")
        return self


@register_attack(
    "label_flip",
    description="Relabel the malicious clients' data: reverse, permutation, all_to_one or source_target.",
    params=LabelFlipParams,
    reference=(
        "Tolpegin et al. 2020, Data Poisoning Attacks Against Federated Learning Systems "
        "(source-to-target); Fang et al. 2020 (y -> C-1-y); attack.poison_fraction of eligible samples."
    ),
)
class LabelFlip(Attack):
    """Train on flipped labels (see the module docstring for the modes)."""

    kind = AttackKind.DATA
    knowledge = Knowledge.LOCAL

    def __init__(
        self,
        params: LabelFlipParams,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        collude: bool = False,
    ) -> None:
        self.params = params
        self.num_classes = num_classes
        if params.mode in ("all_to_one", "source_target"):
            check_class("attack.target_class", params.target_class, num_classes)
        for c in params.source_classes:
            check_class("attack.source_classes", c, num_classes)
        self._fixed: Tensor | None = None
        if params.mode == "permutation" and params.permutation is not None:
            if sorted(params.permutation) != list(range(num_classes)):
                raise ConfigError(
                    f"attack.permutation: expected a permutation of 0..{num_classes - 1}, "
                    f"got {params.permutation}"
                )
            self._fixed = torch.tensor(params.permutation, dtype=torch.int64)
        elif params.mode != "permutation":
            self._fixed = label_map(
                params.mode,
                num_classes,
                target_class=params.target_class,
                source_classes=tuple(params.source_classes),
            )

    def mapping(self, generator: torch.Generator) -> Tensor:
        """The label map of one client (drawn from ``generator`` for a random permutation)."""
        if self._fixed is not None:
            return self._fixed
        return random_permutation(self.num_classes, generator)

    def poison(
        self, x: Tensor, y: Tensor, *, client_id: int, slot: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Return ``x`` unchanged and a relabelled copy of ``y``."""
        mapping = self.mapping(generator)
        return x, flip_labels(y, mapping, fraction=self.params.poison_fraction, generator=generator)

    @property
    def target_class(self) -> int | None:
        """The target of ``all_to_one`` and ``source_target``; ``None`` otherwise."""
        if self.params.mode in ("all_to_one", "source_target"):
            return self.params.target_class
        return None

    @property
    def source_classes(self) -> tuple[int, ...] | None:
        """``source_target``: the sources; ``all_to_one``: every other class."""
        if self.params.mode == "source_target":
            return tuple(sorted(set(self.params.source_classes) - {self.params.target_class}))
        if self.params.mode == "all_to_one":
            return tuple(c for c in range(self.num_classes) if c != self.params.target_class)
        return None
