"""Backdoor triggers: BadNets pixel pattern and patch, blended trigger, and DBA.

References and exact variants:

- ``backdoor``: Gu et al. 2017, 'BadNets: Identifying Vulnerabilities in the
  Machine Learning Model Supply Chain'. A trigger is stamped onto
  :math:`\\mathrm{round}(p \\cdot N)` of a malicious client's :math:`N`
  samples (drawn uniformly with its poisoning generator; ``p`` is
  ``attack.poison_fraction``), and those samples are relabelled to
  ``attack.target_class``: in place (``attack.poison_mode: replace``, the
  default), or as copies added after all the clean samples (``append``).
  Triggers (all channels alike):

  - ``pixel``: BadNets' pattern backdoor, a checkerboard in an
    ``s x s`` square: pixel :math:`(r, c)` of the square is set to ``v`` when
    :math:`(r + c)` is even (``s = 1`` is BadNets' single-pixel backdoor);
  - ``patch``: the whole ``s x s`` square set to ``v``;
  - ``blended``: Chen et al. 2017, 'Targeted Backdoor Attacks on Deep Learning
    Systems Using Data Poisoning', blended injection
    :math:`x' = (1 - \\alpha) x + \\alpha k` over the whole input, with key
    pattern :math:`k \\sim U[0, v)` drawn once from a generator seeded by
    ``attack.pattern_seed`` (the same pattern for every client and at test
    time).

  ``attack.trigger_location`` is a corner name, ``center``, or ``[row, col]``
  of the square's top-left pixel.

- ``dba``: Xie et al. 2020, 'DBA: Distributed Backdoor Attacks against
  Federated Learning' (ICLR). The global trigger is ``attack.pieces``
  horizontal bars of ``1 x s`` pixels laid out two per row (one row for
  vector inputs), ``attack.trigger_gap`` pixels apart, with the layout's
  top-left at ``attack.trigger_location``. The malicious client in slot
  ``i`` stamps only piece ``i mod pieces`` (the attack assumes colluding
  clients, so ``attack.collude`` changes nothing); the test-time trigger is the
  union of all pieces. The update is multiplied by ``attack.scale`` (the
  paper's scale factor :math:`\\gamma`; 1 by default, so plain DBA is a data
  attack).

Inputs are ``(N, C, H, W)`` images, ``(N, H, W)`` or ``(N, D)`` vectors (seen as
a ``1 x D`` image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import TargetParams, check_class
from fedpoison.attacks.registry import register_attack
from fedpoison.core.draws import random_subset
from fedpoison.errors import ConfigError

TriggerKind = Literal["pixel", "patch", "blended"]
NamedLocation = Literal["top_left", "top_right", "bottom_left", "bottom_right", "center"]
Location = NamedLocation | tuple[int, int]


@dataclass(frozen=True)
class Trigger:
    """A trigger for inputs of one shape.

    Attributes
    ----------
    mask:
        bool, the input's shape: which entries the trigger changes.
    pattern:
        float32, the input's shape: the trigger's values.
    alpha:
        Blend weight: stamped entries become ``(1 - alpha) x + alpha pattern``.
    """

    mask: Tensor
    pattern: Tensor
    alpha: float = 1.0


def spatial_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` view of an input shape: ``(D,)`` is ``1 x 1 x D``, ``(H, W)`` is ``1 x H x W``."""
    if len(input_shape) == 1:
        return 1, 1, input_shape[0]
    if len(input_shape) == 2:
        return 1, input_shape[0], input_shape[1]
    if len(input_shape) == 3:
        return input_shape[0], input_shape[1], input_shape[2]
    raise ConfigError(f"attack: triggers need inputs of 1 to 3 dimensions, got shape {input_shape}")


def resolve_location(
    location: Location, *, extent: tuple[int, int], image: tuple[int, int], key: str = "attack.trigger_location"
) -> tuple[int, int]:
    """Top-left ``(row, col)`` of a ``extent = (h, w)`` region inside an ``image = (H, W)``.

    Raises :class:`ConfigError` naming ``key`` when the region does not fit.
    """
    (h, w), (big_h, big_w) = extent, image
    named = {
        "top_left": (0, 0),
        "top_right": (0, big_w - w),
        "bottom_left": (big_h - h, 0),
        "bottom_right": (big_h - h, big_w - w),
        "center": ((big_h - h) // 2, (big_w - w) // 2),
    }
    r, c = named[location] if isinstance(location, str) else location
    if r < 0 or c < 0 or r + h > big_h or c + w > big_w:
        raise ConfigError(
            f"{key}: a {h}x{w} trigger at ({r}, {c}) does not fit a {big_h}x{big_w} input, "
            f"got location {location!r}"
        )
    return r, c


def square_trigger(
    kind: Literal["pixel", "patch"],
    input_shape: tuple[int, ...],
    *,
    size: int,
    location: Location,
    value: float,
) -> Trigger:
    """BadNets trigger: a checkerboard (``pixel``) or a solid (``patch``) ``size x size`` square.

    Example
    -------
    >>> t = square_trigger("pixel", (1, 4, 4), size=3, location="bottom_right", value=1.0)
    >>> t.mask[0].int().tolist()
    [[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 1]]
    """
    ch, big_h, big_w = spatial_shape(input_shape)
    h = min(size, big_h)  # vector inputs: a 1 x size strip
    r0, c0 = resolve_location(location, extent=(h, size), image=(big_h, big_w))
    mask = torch.zeros(ch, big_h, big_w, dtype=torch.bool)
    rows = torch.arange(h)[:, None]
    cols = torch.arange(size)[None, :]
    cells = torch.ones(h, size, dtype=torch.bool) if kind == "patch" else (rows + cols) % 2 == 0
    mask[:, r0 : r0 + h, c0 : c0 + size] = cells
    pattern = torch.where(mask, torch.tensor(value), torch.tensor(0.0))
    return Trigger(mask.reshape(input_shape), pattern.reshape(input_shape).float(), 1.0)


def blended_trigger(input_shape: tuple[int, ...], *, alpha: float, value: float, pattern_seed: int) -> Trigger:
    """Chen et al.'s blended trigger: a ``U[0, value)`` key pattern over the whole input."""
    g = torch.Generator().manual_seed(pattern_seed)
    pattern = torch.rand(input_shape, generator=g) * value
    return Trigger(torch.ones(input_shape, dtype=torch.bool), pattern.float(), alpha)


def dba_pieces(
    input_shape: tuple[int, ...],
    *,
    pieces: int,
    size: int,
    gap: int,
    location: Location,
    value: float,
) -> list[Trigger]:
    """DBA's local triggers: ``pieces`` bars of ``1 x size`` pixels, two per row, ``gap`` apart."""
    ch, big_h, big_w = spatial_shape(input_shape)
    per_row = pieces if big_h == 1 else min(2, pieces)
    n_rows = math.ceil(pieces / per_row)
    extent = (n_rows + (n_rows - 1) * gap, per_row * size + (per_row - 1) * gap)
    r0, c0 = resolve_location(location, extent=extent, image=(big_h, big_w))
    out = []
    for i in range(pieces):
        r = r0 + (i // per_row) * (1 + gap)
        c = c0 + (i % per_row) * (size + gap)
        mask = torch.zeros(ch, big_h, big_w, dtype=torch.bool)
        mask[:, r, c : c + size] = True
        pattern = torch.where(mask, torch.tensor(value), torch.tensor(0.0)).float()
        out.append(Trigger(mask.reshape(input_shape), pattern.reshape(input_shape), 1.0))
    return out


def union_trigger(triggers: list[Trigger]) -> Trigger:
    """One trigger stamping every given (non-blended) trigger at once."""
    if any(t.alpha != 1.0 for t in triggers):
        raise ValueError("union_trigger: only triggers with alpha = 1 can be combined")
    mask = torch.stack([t.mask for t in triggers]).any(dim=0)
    pattern = torch.zeros_like(triggers[0].pattern)
    for t in triggers:
        pattern = torch.where(t.mask, t.pattern, pattern)
    return Trigger(mask, pattern, 1.0)


def stamp(x: Tensor, trigger: Trigger) -> Tensor:
    """A copy of the ``(N, *input_shape)`` inputs ``x`` with ``trigger`` stamped on each.

    .. math:: x' = x + \\alpha\\, m \\odot (k - x)

    with mask ``m``, pattern ``k`` and blend weight :math:`\\alpha`; for
    :math:`\\alpha = 1` the masked entries are exactly ``k``.
    """
    mask = trigger.mask.to(x.device)
    pattern = trigger.pattern.to(device=x.device, dtype=x.dtype)
    if trigger.alpha == 1.0:
        return torch.where(mask, pattern, x)
    return torch.where(mask, (1.0 - trigger.alpha) * x + trigger.alpha * pattern, x)


def poison_with_trigger(
    x: Tensor,
    y: Tensor,
    trigger: Trigger,
    *,
    target_class: int,
    fraction: float,
    generator: torch.Generator,
    append: bool = False,
) -> tuple[Tensor, Tensor]:
    """Poison ``round(fraction * N)`` uniformly drawn samples: triggered and relabelled.

    Returns new tensors: with ``append`` false the chosen samples are replaced
    (``N`` samples out); with ``append`` true every clean sample is kept and
    the poisoned copies follow them (``N + round(fraction * N)`` samples out).
    """
    n = y.shape[0]
    idx = random_subset(n, round(fraction * n), generator=generator, device=y.device)
    bad_x = stamp(x[idx], trigger)
    bad_y = torch.full_like(y[idx], target_class)
    if append:
        return torch.cat([x, bad_x]), torch.cat([y, bad_y])
    x_out, y_out = x.clone(), y.clone()
    x_out[idx] = bad_x
    y_out[idx] = bad_y
    return x_out, y_out


class TriggerParams(TargetParams):
    """BadNets / blended trigger parameters (shared by ``backdoor``, ``model_replacement``, ``norm_bounded``)."""

    #: ``pixel`` (checkerboard pattern), ``patch`` (solid square) or ``blended`` (whole-input key).
    trigger: TriggerKind = "pixel"
    #: Side of the square, in pixels.
    trigger_size: int = Field(3, ge=1)
    #: ``top_left``, ``top_right``, ``bottom_left``, ``bottom_right``, ``center`` or ``[row, col]``.
    trigger_location: Location = "bottom_right"
    #: Value of the trigger's pixels (``blended``: the key pattern is ``U[0, value)``).
    trigger_value: float = 1.0
    #: ``blended``: weight of the key pattern.
    blend_alpha: float = Field(0.2, gt=0.0, le=1.0)
    #: ``blended``: seed of the key pattern (the same for every client and at test time).
    pattern_seed: int = Field(0, ge=0)


def build_trigger(params: TriggerParams, input_shape: tuple[int, ...]) -> Trigger:
    """The trigger ``params`` describe, for inputs of ``input_shape``."""
    if params.trigger == "blended":
        return blended_trigger(
            input_shape, alpha=params.blend_alpha, value=params.trigger_value, pattern_seed=params.pattern_seed
        )
    return square_trigger(
        params.trigger,
        input_shape,
        size=params.trigger_size,
        location=params.trigger_location,
        value=params.trigger_value,
    )


class TriggerAttack(Attack):
    """Shared base: stamp a trigger on a share of the data and relabel to the target.

    Built from :class:`TriggerParams` (or a subclass); subclasses with other
    triggers (DBA) set the same attributes themselves.
    """

    params: TargetParams
    trigger: Trigger
    collude: bool
    _target: int
    _fraction: float
    _append: bool

    def __init__(
        self,
        params: TriggerParams,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        collude: bool = False,
    ) -> None:
        self._setup(params, num_classes=num_classes, collude=collude)
        self.trigger = build_trigger(params, tuple(input_shape))

    def _setup(self, params: TargetParams, *, num_classes: int, collude: bool) -> None:
        self.params = params
        self.collude = collude
        self._target = check_class("attack.target_class", params.target_class, num_classes)
        self._fraction = params.poison_fraction
        self._append = params.poison_mode == "append"

    def poison(
        self, x: Tensor, y: Tensor, *, client_id: int, slot: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Poison ``round(poison_fraction * N)`` samples (in place or appended copies)."""
        return poison_with_trigger(
            x,
            y,
            self.trigger,
            target_class=self._target,
            fraction=self._fraction,
            generator=generator,
            append=self._append,
        )

    def backdoor(self, x: Tensor) -> Tensor:
        """Test inputs with the full trigger stamped."""
        return stamp(x, self.trigger)

    @property
    def target_class(self) -> int:
        """The backdoor's target class."""
        return self._target


@register_attack(
    "backdoor",
    description="BadNets: stamp a pixel/patch/blended trigger on a share of the data, relabel to the target.",
    params=TriggerParams,
    reference=(
        "Gu et al. 2017, BadNets (pixel pattern / patch trigger); Chen et al. 2017, Targeted Backdoor "
        "Attacks ... Using Data Poisoning (blended injection); attack.poison_fraction of samples relabelled."
    ),
)
class Backdoor(TriggerAttack):
    """BadNets-style backdoor data poisoning."""

    kind = AttackKind.DATA
    knowledge = Knowledge.LOCAL


class DBAParams(TargetParams):
    """Parameters of ``dba``."""

    #: Number of local trigger pieces (the paper uses 4).
    pieces: int = Field(4, ge=1)
    #: Length of each piece (a ``1 x size`` bar), in pixels.
    trigger_size: int = Field(2, ge=1)
    #: Pixels between neighbouring pieces.
    trigger_gap: int = Field(1, ge=0)
    #: Where the global trigger's top-left goes: a corner name, ``center`` or ``[row, col]``.
    trigger_location: Location = "top_left"
    trigger_value: float = 1.0
    #: The paper's scale factor gamma applied to each malicious update.
    scale: float = 1.0


@register_attack(
    "dba",
    description="Distributed backdoor: each colluding client stamps one piece of a global trigger.",
    params=DBAParams,
    reference=(
        "Xie et al. 2020, DBA: Distributed Backdoor Attacks against Federated Learning (ICLR); "
        "piece = slot mod pieces, test trigger = union of pieces, update scaled by gamma = attack.scale."
    ),
)
class DBA(TriggerAttack):
    """Distributed backdoor attack: one trigger piece per malicious slot."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL
    params: DBAParams

    def __init__(
        self,
        params: DBAParams,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        collude: bool = False,
    ) -> None:
        self._setup(params, num_classes=num_classes, collude=collude)
        self.pieces = dba_pieces(
            tuple(input_shape),
            pieces=params.pieces,
            size=params.trigger_size,
            gap=params.trigger_gap,
            location=params.trigger_location,
            value=params.trigger_value,
        )
        self.trigger = union_trigger(self.pieces)

    def piece(self, slot: int) -> Trigger:
        """The local trigger of the malicious client in ``slot``."""
        return self.pieces[slot % len(self.pieces)]

    def poison(
        self, x: Tensor, y: Tensor, *, client_id: int, slot: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Stamp this slot's piece on ``round(poison_fraction * N)`` samples (or copies) and relabel."""
        return poison_with_trigger(
            x,
            y,
            self.piece(slot),
            target_class=self._target,
            fraction=self._fraction,
            generator=generator,
            append=self._append,
        )

    def craft(self, ctx: AttackContext) -> Tensor:
        """The trained updates times the scale factor gamma."""
        return ctx.own_updates * self.params.scale
