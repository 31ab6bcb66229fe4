"""Fang et al.'s local model poisoning attacks on Krum and on trimmed mean / median.

Reference: Fang, Cao, Jia & Gong 2020, 'Local Model Poisoning Attacks to
Byzantine-Robust Federated Learning' (USENIX Security), Sec. 4. Notation:
:math:`c` malicious rows this round, :math:`n` participants, :math:`d`
parameters, :math:`w_{Re}` the global model, benign local models
:math:`w_i = w_{Re} + u_i`, and the change direction under no attack

.. math:: s_j = \\begin{cases} 1 & \\bar u_j > 0 \\\\ -1 & \\text{otherwise} \\end{cases}

estimated with the mean :math:`\\bar u` of the benign updates.

**Krum attack** (Sec. 4.2). The attackers send :math:`c` copies of
:math:`w'_1 = w_{Re} - \\lambda s` (the paper lets the other :math:`c - 1`
lie within :math:`\\epsilon` of :math:`w'_1`; identical copies, the
:math:`\\epsilon = 0` case, are used here). :math:`\\lambda` starts at the
paper's upper bound

.. math::

   \\lambda_{\\max} = \\frac{1}{(n - 2c - 1)\\sqrt d} \\min_i
   \\sum_{l \\in \\tilde\\Gamma_i} \\|w_l - w_i\\|
   + \\frac{1}{\\sqrt d} \\max_i \\|w_i - w_{Re}\\|

(:math:`\\tilde\\Gamma_i`: the :math:`n - c - 2` benign models closest to
:math:`w_i`; counts are clipped to what exists and the denominator to at
least 1) and is halved until Krum selects :math:`w'_1` or :math:`\\lambda`
drops below ``attack.threshold`` (:math:`10^{-5}`, the paper's). The check is
Krum (Blanchard et al. 2017: score = sum of squared distances to the
:math:`n' - f - 2` nearest other rows, lowest score selected, ties to the
crafted row) with :math:`f = c`, over the benign rows plus the :math:`c`
crafted copies: the server's own Krum scores (:func:`fedpoison.core.rows.krum_scores`),
with its neighbour clamp and precision. Threat model: the paper's full knowledge is "the aggregation
rule and all benign local models". The attack is Krum's by name, so knowing
the rule is built in and the attack runs with ``omniscient`` knowledge; when
the attacker is ``defense_aware`` the check instead asks the server's
configured defense whether a crafted row is selected.

**Trim attack** (Sec. 4.3; also the attack on the median). Full knowledge,
per coordinate, with :math:`w_{\\max,j}, w_{\\min,j}` the benign extremes and
:math:`b` = ``attack.b`` (2 in the paper), each attacker draws independently,
uniformly, from

- :math:`s_j = -1`: :math:`[w_{\\max,j}, b\\,w_{\\max,j}]` if
  :math:`w_{\\max,j} > 0`, else :math:`[w_{\\max,j}, w_{\\max,j}/b]`;
- :math:`s_j = 1`: :math:`[w_{\\min,j}/b, w_{\\min,j}]` if
  :math:`w_{\\min,j} > 0`, else :math:`[b\\,w_{\\min,j}, w_{\\min,j}]`.

The paper works on model parameters (``attack.space: model``, the default);
``attack.space: update`` applies the same rule to the updates
(:math:`w_{Re} = 0`).

**Partial knowledge** (both attacks). The attackers know only their own
benign updates and use them in place of the honest ones. For Krum (the paper's
Eq. 4) the direction :math:`\\tilde s` is the sign of the own updates' mean,
and :math:`\\lambda` is searched so that Krum over **one** crafted model and
the :math:`c` own updates selects the crafted one; only when no
:math:`\\lambda` above the threshold works is a second identical crafted
model added, then a third, and so on (:func:`fang_krum_partial_rows`). Krum
in that check assumes as many Byzantine rows as there are crafted ones
(:math:`f = k` for :math:`k` crafted; the paper does not state it, and its
authors' group's code, FLDetector's ``dir_partial_krum_lambda``, does so);
the search starts from Theorem 1's bound for those :math:`c + k` rows. For Trim, with the per-coordinate mean
:math:`\\mu_j` and standard deviation :math:`\\sigma_j` of the own updates,
each attacker draws from :math:`[\\mu_j + 3\\sigma_j, \\mu_j + 4\\sigma_j]`
when :math:`s_j = -1` and from :math:`[\\mu_j - 4\\sigma_j, \\mu_j - 3\\sigma_j]`
when :math:`s_j = 1`.

``attack.variant``: ``full``, ``partial``, or ``auto`` (the default): full when
the threat model shows the honest updates (``attack.knowledge`` omniscient or
defense_aware), partial under ``local``. That is why both attacks declare
``local`` as the knowledge they need.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import repeat_row
from fedpoison.core.draws import uniform_like
from fedpoison.core.rows import coordinate_mean_std, krum_scores, pairwise_sq_distances, row_norms
from fedpoison.errors import ConfigError

if TYPE_CHECKING:
    from fedpoison.config import ExperimentConfig

Variant = Literal["auto", "full", "partial"]


def change_direction(benign: Tensor) -> Tensor:
    """``(d,)`` :math:`s`: +1 where the mean benign update is positive, -1 elsewhere."""
    mean = benign.mean(dim=0)
    return torch.where(mean > 0, 1.0, -1.0).to(benign.dtype)


def krum_picks_crafted(benign: Tensor, crafted: Tensor, f: int, neighbours: int | None = None) -> bool:
    """Whether Krum over ``benign`` then ``crafted`` rows selects a crafted row (ties: crafted).

    The scores are the server's own (:func:`fedpoison.core.rows.krum_scores`,
    same precision), so with full knowledge the check predicts what the
    server's ``krum`` rule selects. ``neighbours`` replaces Krum's
    ``n - f - 2`` (see :func:`fang_krum_rows`).
    """
    scores = krum_scores(pairwise_sq_distances(torch.cat([benign, crafted])), f, neighbours=neighbours)
    k = benign.shape[0]
    if k == 0:
        return True
    return bool(scores[k:].min() <= scores[:k].min())


def fang_krum_lambda_max(benign: Tensor, *, num_participants: int, num_malicious: int,
                         sq_dist: Tensor | None = None) -> float:
    """Fang et al.'s upper bound on :math:`\\lambda` (module docstring), in update space.

    ``sq_dist``: the benign rows' ``(k, k)`` squared distances when already computed.
    """
    k, d = benign.shape
    n, c = num_participants, num_malicious
    far = float(row_norms(benign.double()).max()) / math.sqrt(d) if k else 0.0
    if k < 2:
        return far
    dist = (pairwise_sq_distances(benign.double()) if sq_dist is None else sq_dist.clone()).sqrt()
    dist.fill_diagonal_(float("inf"))
    near = min(max(n - c - 2, 1), k - 1)
    closest = dist.topk(near, dim=1, largest=False).values.sum(dim=1).min()
    return float(closest) / (max(n - 2 * c - 1, 1) * math.sqrt(d)) + far


def fang_krum_rows(
    benign: Tensor,
    *,
    num_malicious: int,
    num_participants: int,
    selected: Callable[[Tensor], bool] | None = None,
    threshold: float = 1e-5,
) -> tuple[Tensor, float]:
    """``(c, d)`` copies of :math:`-\\lambda s` and the :math:`\\lambda` found (full knowledge, Eq. 2).

    ``selected(crafted_rows)`` tells whether the rule picks a crafted row;
    by default Krum over ``benign`` plus the :math:`c` crafted rows with
    :math:`f = c`, i.e. the neighbour count :math:`n - c - 2` (``n`` =
    ``num_participants``, clipped to the rows there are).
    Halving stops at the first selected :math:`\\lambda`, or once it is below
    ``threshold`` (that last value is returned).
    """
    c = num_malicious
    s = change_direction(benign)
    search = KrumSearch(benign, -s) if selected is None else None
    lam = fang_krum_lambda_max(benign, num_participants=num_participants, num_malicious=c,
                               sq_dist=search.benign_sq if search is not None else None)
    while lam >= threshold:
        if search is not None:
            if search.picks_crafted(lam, c, f=c, neighbours=num_participants - c - 2):
                return repeat_row(s * (-lam), c), lam
        elif selected is not None and selected(repeat_row(s * (-lam), c)):
            return repeat_row(s * (-lam), c), lam
        lam /= 2.0
    return repeat_row(s * (-lam), c), lam


def fang_krum_partial_rows(own: Tensor, *, num_malicious: int, threshold: float = 1e-5) -> tuple[Tensor, float, int]:
    """Partial knowledge (Eq. 4): ``(c, d)`` copies of :math:`-\\lambda \\tilde s`, :math:`\\lambda`, and the supporters used.

    For :math:`k = 1, 2, \\ldots, c` crafted copies, :math:`\\lambda` starts at
    Theorem 1's bound for the :math:`c` own rows among :math:`c + k` with
    :math:`k` Byzantine (:func:`fang_krum_lambda_max`) and is halved until Krum
    with :math:`f = k` over the own rows plus :math:`k` copies selects a copy;
    the first :math:`k` for which a :math:`\\lambda` at or above ``threshold``
    works ends the search. If none does, the last :math:`\\lambda` (below the
    threshold) is used. All :math:`c` compromised workers then send the copy.
    """
    c = num_malicious
    s = change_direction(own)
    search = KrumSearch(own, -s)
    k_own = own.shape[0]
    lam = threshold / 2.0
    for k in range(1, max(c, 1) + 1):
        lam = fang_krum_lambda_max(own, num_participants=k_own + k, num_malicious=k, sq_dist=search.benign_sq)
        while lam >= threshold:
            if search.picks_crafted(lam, k, f=k):
                return repeat_row(s * (-lam), c), lam, k
            lam /= 2.0
    return repeat_row(s * (-lam), c), lam, c


class KrumSearch:
    """Krum's check for :math:`c` copies of :math:`\\lambda t`, with the benign distances computed once.

    The halving search of :func:`fang_krum_rows` asks, for each
    :math:`\\lambda`, whether Krum over the :math:`k` benign rows :math:`b_i`
    plus :math:`c` copies of :math:`v = \\lambda t` selects a copy. Only the
    benign-to-copy distances depend on :math:`\\lambda`:

    .. math:: \\|b_i - \\lambda t\\|^2 = \\|b_i\\|^2 + \\lambda^2 \\|t\\|^2 - 2 \\lambda\\, b_i \\cdot t,

    and the copies are at distance 0 from each other. So the :math:`k \\times k`
    benign block and the :math:`k` dot products :math:`b_i \\cdot t` are
    computed once (:math:`O(k^2 d)`), and each :math:`\\lambda` then costs
    :math:`O((k + c)^2)` instead of :math:`O((k + c)^2 d)`. Distances are in
    float64 (the search as first written computed them so); the answers equal
    :func:`krum_picks_crafted` on the materialised float64 rows up to rounding.
    """

    def __init__(self, benign: Tensor, t: Tensor) -> None:
        b64, t64 = benign.double(), t.double()
        self.benign_sq = pairwise_sq_distances(b64)
        self.norms_sq = (b64 * b64).sum(dim=1)
        self.dots = b64 @ t64
        self.t_sq = float((t64 * t64).sum())

    def sq_distances(self, lam: float, c: int) -> Tensor:
        """``(k + c, k + c)`` squared distances of the benign rows then ``c`` copies of :math:`\\lambda t`."""
        k = self.norms_sq.shape[0]
        cross = (self.norms_sq + lam * lam * self.t_sq - 2.0 * lam * self.dots).clamp_min(0.0)
        out = self.benign_sq.new_zeros((k + c, k + c))
        out[:k, :k] = self.benign_sq
        out[:k, k:] = cross[:, None]
        out[k:, :k] = cross[None, :]
        return out

    def picks_crafted(self, lam: float, c: int, *, f: int, neighbours: int | None = None) -> bool:
        """Whether Krum with ``f`` selects a copy (ties: the copy), as :func:`krum_picks_crafted` in float64."""
        k = self.norms_sq.shape[0]
        if k == 0:
            return True
        scores = krum_scores(self.sq_distances(lam, c), f, neighbours=neighbours)
        return bool(scores[k:].min() <= scores[:k].min())


def fang_trim_full(
    benign: Tensor,
    global_params: Tensor,
    num_malicious: int,
    *,
    b: float,
    generator: torch.Generator,
) -> Tensor:
    """``(c, d)`` Trim-attack updates from the benign extremes (module docstring).

    ``global_params`` is :math:`w_{Re}` (zeros to work on updates).
    """
    s = change_direction(benign)
    base = global_params.to(benign)
    w_max = (benign + base).amax(dim=0)
    w_min = (benign + base).amin(dim=0)
    up_hi = torch.where(w_max > 0, w_max * b, w_max / b)
    down_lo = torch.where(w_min > 0, w_min / b, w_min * b)
    lo = torch.where(s < 0, w_max, down_lo)
    hi = torch.where(s < 0, up_hi, w_min)
    u = uniform_like((num_malicious, benign.shape[1]), generator=generator, like=benign)
    return lo + u * (hi - lo) - base


def fang_trim_partial(own: Tensor, num_malicious: int, *, generator: torch.Generator) -> Tensor:
    """``(c, d)`` partial-knowledge Trim-attack updates from the own mean and std."""
    s = change_direction(own)
    mean, std = coordinate_mean_std(own)
    lo = torch.where(s < 0, mean + 3.0 * std, mean - 4.0 * std)
    u = uniform_like((num_malicious, own.shape[1]), generator=generator, like=own)
    return lo + u * std


def check_full_variant_knowledge(cfg: ExperimentConfig) -> str | None:
    """Config check: ``attack.variant: full`` needs a threat model that shows the honest updates."""
    variant = cfg.attack.params_dict().get("variant")
    if variant == "full" and cfg.attack.knowledge == "local":
        return (
            f"attack.variant: 'full' for attack '{cfg.attack.name}' needs the honest updates, so "
            "attack.knowledge must be omniscient or defense_aware, got 'local' "
            "(set attack.knowledge=omniscient, or attack.variant=partial)"
        )
    return None


def benign_for(variant: Variant, ctx: AttackContext) -> tuple[Tensor, bool]:
    """The rows standing for the benign updates, and whether this is the full-knowledge variant."""
    full = variant == "full" or (variant == "auto" and ctx.honest_updates is not None)
    if not full:
        return ctx.own_updates, False
    if ctx.honest_updates is None:
        raise ConfigError(
            "attack.variant: 'full' needs the honest updates, so attack.knowledge must be "
            "omniscient or defense_aware, got local"
        )
    honest = ctx.honest_updates
    return (honest if honest.shape[0] > 0 else ctx.own_updates), True


class FangKrumParams(AttackParams):
    """Parameters of ``fang_krum``."""

    #: ``full``, ``partial``, or ``auto`` (full when the honest updates are visible).
    variant: Variant = "auto"
    #: Stop halving lambda below this value.
    threshold: float = Field(1e-5, gt=0.0)


@register_attack(
    "fang_krum",
    description="Fang et al.'s attack on Krum: copies of -lambda*s, lambda halved until Krum picks them.",
    params=FangKrumParams,
    checks=(check_full_variant_knowledge,),
    reference=(
        "Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust FL (USENIX Security), "
        "Krum attack, full (omniscient, Eq. 2) and partial (own updates, Eq. 4: one crafted model among the "
        "own, supporters added only when needed) knowledge, identical crafted copies."
    ),
)
class FangKrum(Attack):
    """Fang et al.'s Krum attack."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL

    def __init__(
        self,
        params: FangKrumParams,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        collude: bool = False,
    ) -> None:
        self.params = params
        self.last_lambda: float | None = None
        #: Partial knowledge: how many crafted copies the last search simulated (Eq. 4's supporters).
        self.last_supporters: int | None = None

    def craft(self, ctx: AttackContext) -> Tensor:
        """``c`` copies of :math:`-\\lambda s`."""
        benign, full = benign_for(self.params.variant, ctx)
        selected = None
        if full and ctx.defense is not None:
            selected = _defense_selects(ctx, benign)
        if not full:
            rows, lam, self.last_supporters = fang_krum_partial_rows(
                benign, num_malicious=ctx.num_malicious, threshold=self.params.threshold)
            self.last_lambda = lam
            return rows.to(ctx.own_updates.dtype)
        rows, lam = fang_krum_rows(
            benign,
            num_malicious=ctx.num_malicious,
            num_participants=ctx.num_participants,
            selected=selected,
            threshold=self.params.threshold,
        )
        self.last_lambda = lam
        return rows.to(ctx.own_updates.dtype)


def _defense_selects(ctx: AttackContext, benign: Tensor) -> Callable[[Tensor], bool]:
    """A check asking the server's defense whether it selects a crafted row (benign rows first)."""
    defense, defense_ctx = ctx.defense, ctx.defense_ctx
    if defense is None or defense_ctx is None:
        raise ValueError("a defense-aware attack needs ctx.defense and ctx.defense_ctx")
    honest_w = ctx.honest_weights if ctx.honest_weights is not None else ctx.own_weights
    if honest_w.shape[0] != benign.shape[0]:
        honest_w = torch.ones(benign.shape[0], dtype=ctx.own_weights.dtype, device=ctx.own_weights.device)
    weights = torch.cat([honest_w, ctx.own_weights]).to(benign.device)
    k = benign.shape[0]

    def selected(rows: Tensor) -> bool:
        result = defense(torch.cat([benign, rows.to(benign)]), weights, defense_ctx)
        return bool(result.selected[k:].any())

    return selected


class FangTrimParams(AttackParams):
    """Parameters of ``fang_trim``."""

    #: ``full``, ``partial``, or ``auto`` (full when the honest updates are visible).
    variant: Variant = "auto"
    #: The paper's b > 1: how far beyond the benign extremes values are drawn.
    b: float = Field(2.0, gt=1.0)
    #: ``model`` (the paper's: parameters w_Re + u) or ``update`` (the same rule on updates).
    space: Literal["model", "update"] = "model"


@register_attack(
    "fang_trim",
    description="Fang et al.'s attack on trimmed mean and median: values beyond the benign extremes.",
    params=FangTrimParams,
    checks=(check_full_variant_knowledge,),
    reference=(
        "Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust FL (USENIX Security), "
        "Trim attack, full knowledge ([w_max, b*w_max] rule, b = 2) and partial knowledge (mu +/- 3..4 sigma)."
    ),
)
class FangTrim(Attack):
    """Fang et al.'s Trim attack (against trimmed mean and median)."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL

    def craft(self, ctx: AttackContext) -> Tensor:
        """``c`` rows, each drawn independently from the attack's intervals."""
        benign, full = benign_for(self.params.variant, ctx)
        c = ctx.num_malicious
        if not full:
            return fang_trim_partial(benign, c, generator=ctx.generator)
        base = ctx.global_params if self.params.space == "model" else torch.zeros_like(benign[0])
        return fang_trim_full(benign, base, c, b=self.params.b, generator=ctx.generator)
