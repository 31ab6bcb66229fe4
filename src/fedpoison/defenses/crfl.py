"""CRFL: clip the global model's norm and add noise every round; certify by parameter smoothing.

Reference: Chulin Xie, Minghao Chen, Pin-Yu Chen and Bo Li, "CRFL: Certifiably
Robust Federated Learning against Backdoor Attacks", ICML 2021; the authors'
code is ``AI-secure/CRFL`` (``main.py`` for training, ``smooth_*.py`` and
``certify_*.py`` for the certificate).

**Training** (every round :math:`t`). The server averages the clients'
updates (FedAvg, sample-weighted), clips the *new global model* to norm
:math:`\\rho_t`, and perturbs it with Gaussian noise:

.. math::

   \\theta_{t+1} = \\operatorname{clip}_{\\rho_t}(\\theta_t + \\bar u_t) + \\sigma\\,\\varepsilon_t,
   \\qquad \\operatorname{clip}_\\rho(v) = v \\cdot \\min(1, \\rho / \\lVert v \\rVert_2),
   \\quad \\varepsilon_t \\sim N(0, I).

The threshold grows with the round, as in the authors' ``main.py``:
:math:`\\rho_t = \\min(\\rho_0 + \\kappa\\,(t + 1), \\rho)` (:func:`clip_threshold`;
their rounds count from 1, fedpoison's from 0). Their three configs start the
line just above the norm of the freshly initialised global model (PyTorch's
default initialisation): MNIST's linear model has norm 1.8 and
:math:`\\rho_t = \\min(2 + 0.1\\,t, 15)`; EMNIST's, norm 4.0, :math:`\\min(4 + 0.25\\,t, 100)`;
LOAN's, norm 1.7, :math:`\\min(2 + 0.025\\,t, 5)`. So the clip binds from the
first round and lets the model's norm grow only along the line.

As a rule, ``crfl`` returns the aggregate :math:`\\theta_{t+1} - \\theta_t`, so
with the server step's learning rate 1 (the default, which ``crfl`` requires)
the global model is exactly the paper's. The noise comes from the round's
defense generator.

**Certification** (after the last round :math:`T`). Parameter smoothing:
:math:`M` noisy copies :math:`\\theta_T + \\sigma_T \\varepsilon_m` of the final
model vote on each test input; :math:`\\hat p_A` and :math:`\\hat p_B` are the
shares of the top and the runner-up class, bounded by Hoeffding's inequality at
error level :math:`\\alpha` (:func:`hoeffding_bounds`):
:math:`\\underline{p_A} = \\hat p_A - \\sqrt{\\ln(1/\\alpha) / 2M}`,
:math:`\\overline{p_B} = \\hat p_B + \\sqrt{\\ln(1/\\alpha) / 2M}`. Where
:math:`\\underline{p_A} > \\overline{p_B}` the smoothed prediction is certified
against every backdoor whose trigger magnitude :math:`\\lVert\\delta\\rVert_2` stays
below the radius (the paper's Theorem 3, in the form the authors' certification
code ``certify_mnist.py: cal_prob_bound`` evaluates; :func:`certified_radius`):

.. math::

   \\mathrm{RAD} = \\sqrt{ \\frac{ -\\ln\\left(1 - (\\sqrt{\\underline{p_A}} - \\sqrt{\\overline{p_B}})^2\\right) \\sigma^2 }
       { 2 R \\tau^2 L_Z^2 \\left(\\sum_{i=1}^{R} p_i^2\\right) \\gamma^2 \\eta^2 (q_B / n_B)^2
         \\prod_{t = t_{adv} + 1}^{T} \\left(2 \\Phi(\\rho_t / \\sigma_t) - 1\\right) } }

with :math:`R` attackers of aggregation weights :math:`p_i`, :math:`\\tau` local
iterations of learning rate :math:`\\eta`, a share :math:`q_B / n_B` of poisoned
samples per batch, a scale factor :math:`\\gamma`, :math:`L_Z` the Lipschitz
constant of the loss gradient in the trigger, :math:`t_{adv}` the round of the
attack and :math:`\\Phi` the standard normal CDF. The certified accuracy at
radius :math:`r` is the share of test inputs whose smoothed prediction is the
true label and certified with :math:`\\mathrm{RAD} \\ge r`.

**The deployed model** is the smoothed classifier, the majority vote of the
:math:`M` noisy copies, not the final model itself. The accuracy and attack
success in the run's history are those of the single final model; under a
backdoor attack certification also lets the same :math:`M` copies vote on the
backdoored versions of the certified inputs (:func:`smoothed_backdoor`), which
gives the smoothed classifier's attack success rate, as the authors'
``smooth_mnist.py`` evaluates the poisoned test inputs.

Variant, and deviations from the paper:

- defaults are the paper's MNIST settings (``configs/mnist_params.yaml``,
  ``mnist_smooth_params.yaml`` and ``main.py``): :math:`\\rho_0 = 2`,
  :math:`\\kappa = 0.1`, :math:`\\rho = 15`, :math:`\\sigma = 0.01`,
  :math:`M = 1000`, :math:`\\alpha = 0.001`; the smoothing noise is the training
  noise (:math:`\\sigma_T = \\sigma`). For another model, start the line at
  that model's initial norm as the authors do (``defense.crfl_clip_start``);
  ``crfl_clip_start: null`` clips at the constant :math:`\\rho`;
- the noise is added in every round, the last one included, and the accuracy
  is measured on the noisy model (the authors evaluate before adding it); the
  smoothing copies are drawn around that noisy final model, where the authors
  draw them around the model saved before the last noise;
- the clip and the noise act on the flat parameter vector, every weight and
  bias, as the authors' norm and clip do (``named_parameters``); buffers
  (BatchNorm statistics) are not in it and get no noise, where the authors'
  noise loop also perturbs them (their models have none);
- :math:`L_Z = \\sqrt{17}`: the authors' code fixes
  :math:`L_Z = \\sqrt{2 + 2\\rho_{adv} + \\rho_{adv}^2}` with
  :math:`\\rho_{adv} = 3`; ``defense.crfl_lipschitz`` changes it;
- the threat constants come from the run (:func:`fedpoison.simulation.certify.threat_of`):
  :math:`R` its malicious clients, :math:`p_i` their sample shares, :math:`\\eta`
  and :math:`\\tau` the local learning rate and steps, :math:`q_B/n_B` the
  attack's poisoned share, :math:`\\gamma` its ``scale`` (1 without one), and
  :math:`t_{adv}` its first round. They describe the attack the certificate
  covers; the server needs none of them to train;
- only the first ``defense.crfl_certify_inputs`` test inputs are certified
  (1000 by default): :math:`M` forward passes over the whole test set are costly
  on a CPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.draws import gaussian_like
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.mean import weighted_mean
from fedpoison.defenses.registry import RULES
from fedpoison.errors import FedPoisonWarning

#: The authors' fixed Lipschitz constant: sqrt(2 + 2 rho + rho^2) with rho = 3.
PAPER_LIPSCHITZ = math.sqrt(2 + 2 * 3 + 3**2)

#: ``predict(flat_params) -> (N,)`` labels of the certified inputs under those parameters.
PredictFn = Callable[[Tensor], Tensor]


def clip_model_norm(params: Tensor, bound: float) -> Tensor:
    """``params`` scaled to L2 norm at most ``bound`` (computed in float64, so huge entries do not overflow).

    Example
    -------
    >>> clip_model_norm(torch.tensor([3.0, 4.0]), 1.0).tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    v = params.double()
    n = float(torch.linalg.vector_norm(v))
    factor = min(1.0, bound / n) if n > 0 and math.isfinite(n) else (1.0 if n == 0 else 0.0)
    return (v * factor).to(params.dtype)


def clip_threshold(round_index: int, *, start: float | None, growth: float, cap: float) -> float:
    """:math:`\\rho_t = \\min(\\rho_0 + \\kappa (t + 1), \\rho)` for the zero-based round ``t``; ``cap`` when ``start`` is None.

    Example
    -------
    >>> clip_threshold(0, start=2.0, growth=0.1, cap=15.0), clip_threshold(199, start=2.0, growth=0.1, cap=15.0)
    (2.1, 15.0)
    """
    if start is None:
        return cap
    return min(start + growth * (round_index + 1), cap)


def warn_if_clip_shrinks(norm: float, rho: float, start: float | None, ratio: float) -> None:
    """Warn when the global model's ``norm`` is over ``ratio`` times the clip threshold ``rho``.

    The authors start the threshold just above their model's initial norm
    (1.83 for the MNIST defaults); a larger model clipped at that line loses
    most of its weights every round.
    """
    if not (math.isfinite(norm) and norm > ratio * rho):
        return
    what = "crfl_clip_start" if start is not None else "crfl_clip"
    warnings.warn(f"defense.{what}: the global model's norm {norm:.3g} is {norm / rho:.1f} times the clip "
                  f"threshold {rho:.3g}, so every round shrinks the model; the defaults are the authors' line for "
                  f"an MNIST model of norm 1.83: start the line near your model's initial norm "
                  f"(defense.crfl_clip_start)", FedPoisonWarning, stacklevel=2)


def crfl_step(params: Tensor, aggregate: Tensor, *, clip: float, sigma: float,
              generator: torch.Generator) -> Tensor:
    """CRFL's next global model: :math:`\\operatorname{clip}_\\rho(\\theta + g) + \\sigma\\varepsilon`."""
    new = clip_model_norm(params + aggregate, clip)
    if sigma > 0:
        new = new + gaussian_like(new.shape, generator=generator, like=new, std=sigma)
    return new


def hoeffding_bounds(p_a: np.ndarray, p_b: np.ndarray, samples: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower bound of :math:`p_A` and upper bound of :math:`p_B` at level ``alpha`` from ``samples`` votes.

    :math:`\\hat p_A - \\epsilon` and :math:`\\hat p_B + \\epsilon` with
    :math:`\\epsilon = \\sqrt{\\ln(1/\\alpha) / 2M}`, kept inside
    :math:`[10^{-8}, 1 - 10^{-8}]` as in the authors' code.

    Example
    -------
    >>> lo, hi = hoeffding_bounds(np.array([1.0]), np.array([0.0]), 1000, 0.001)
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.9412, 0.0588)
    """
    eps = math.sqrt(math.log(1 / alpha) / (2 * samples))
    return np.maximum(1e-8, np.asarray(p_a, float) - eps), np.minimum(1 - 1e-8, np.asarray(p_b, float) + eps)


@dataclass(frozen=True)
class CRFLThreat:
    """The attack a CRFL certificate covers (the constants of :func:`certified_radius`).

    Attributes
    ----------
    attackers:
        :math:`R`, how many clients attack.
    weight_sq_sum:
        :math:`\\sum_i p_i^2` over the attackers' aggregation weights.
    scale:
        :math:`\\gamma`, the attackers' scale factor.
    lr:
        :math:`\\eta`, the local learning rate.
    local_steps:
        :math:`\\tau`, local iterations per round.
    poison_ratio:
        :math:`q_B / n_B`, poisoned share of a batch.
    lipschitz:
        :math:`L_Z`.
    rounds_after_attack:
        :math:`T - t_{adv}`, the rounds whose clipping and noise contract the
        attack's effect (the factors :math:`t_{adv}+1, \\dots, T`).
    """

    attackers: int
    weight_sq_sum: float
    scale: float
    lr: float
    local_steps: float
    poison_ratio: float
    lipschitz: float = PAPER_LIPSCHITZ
    rounds_after_attack: int = 1


def contraction(clip: float | Sequence[float], sigma: float, rounds: int) -> float:
    """:math:`\\prod_t (2\\Phi(\\rho_t/\\sigma) - 1)` over ``rounds`` rounds.

    ``clip`` is a constant :math:`\\rho`, or the thresholds :math:`\\rho_t` of
    those rounds (then ``rounds`` is ignored).

    Example
    -------
    >>> round(contraction(1.0, 1.0, 2), 6)  # (2 * 0.841345 - 1) ** 2
    0.466065
    >>> round(contraction([1.0, 2.0], 1.0, 2), 6)  # (2 Phi(1) - 1)(2 Phi(2) - 1)
    0.651627
    """
    clips = [float(clip)] * max(rounds, 0) if isinstance(clip, (int, float)) else [float(c) for c in clip]
    if not clips or sigma <= 0:
        return 1.0
    return float(np.prod([math.erf(c / (sigma * math.sqrt(2.0))) for c in clips]))  # 2 Phi(x) - 1 = erf(x/sqrt2)


def certified_radius(p_a: np.ndarray, p_b: np.ndarray, *, sigma: float, clip: float | Sequence[float],
                     threat: CRFLThreat) -> np.ndarray:
    """CRFL's certified trigger magnitude per input (see the module docstring); 0 where not certified.

    ``p_a`` and ``p_b`` are the bounds of :func:`hoeffding_bounds`. An input is
    certified where :math:`p_A > p_B`; elsewhere the radius is 0. ``clip`` is
    the constant :math:`\\rho` or the thresholds :math:`\\rho_t` of the
    ``threat.rounds_after_attack`` rounds (:func:`contraction`).

    Example
    -------
    With :math:`p_A = 0.9`, :math:`p_B = 0.1`, :math:`(\\sqrt{0.9} - \\sqrt{0.1})^2 = 0.4`:

    >>> t = CRFLThreat(attackers=1, weight_sq_sum=0.01, scale=1.0, lr=1.0, local_steps=1.0, poison_ratio=1.0,
    ...                lipschitz=1.0, rounds_after_attack=1)
    >>> r = certified_radius(np.array([0.9]), np.array([0.1]), sigma=0.01, clip=1e9, threat=t)
    >>> round(float(r[0]), 6)  # sqrt(-ln(0.6) * 1e-4 / (2 * 0.01))
    0.050538
    """
    pa = np.asarray(p_a, float)
    pb = np.asarray(p_b, float)
    gap = (np.sqrt(pa) - np.sqrt(pb)) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = -np.log(1.0 - gap) * sigma**2
    t = threat
    denom = (2.0 * t.attackers * t.local_steps**2 * t.lipschitz**2 * t.weight_sq_sum * t.scale**2 * t.lr**2
             * t.poison_ratio**2 * contraction(clip, sigma, t.rounds_after_attack))
    if not denom > 0:
        return np.where(pa > pb, np.inf, 0.0)
    radius = np.sqrt(np.maximum(fraction, 0.0) / denom)
    return np.where(pa > pb, radius, 0.0)


def smoothed_votes(predict: PredictFn, params: Tensor, *, sigma: float, samples: int,
                   generator: torch.Generator, num_classes: int) -> Tensor:
    """``(N, C)`` int64 votes: how many of ``samples`` noisy copies of ``params`` predict each class.

    ``predict(params) -> (N,)`` labels of the certified inputs under the given
    flat parameters. Copies are drawn one at a time, so memory stays one model.
    """
    votes: Tensor | None = None
    for _ in range(samples):
        noisy = params + gaussian_like(params.shape, generator=generator, like=params, std=sigma)
        pred = predict(noisy).to(torch.int64)
        one = torch.nn.functional.one_hot(pred, num_classes).to(torch.int64)
        votes = one if votes is None else votes + one
    assert votes is not None
    return votes.cpu()


@dataclass(frozen=True)
class SmoothedBackdoor:
    """What the smoothed classifier does on backdoored inputs (one row per input carrying the trigger).

    Attributes
    ----------
    prediction:
        ``(N,)`` smoothed prediction (top class of the votes; ties go to the lower class).
    attack_success_rate:
        Share of the inputs whose smoothed prediction is the target class:
        the ASR of the deployed (smoothed) classifier.
    copy_attack_success_rate:
        Mean over the noisy copies of each copy's ASR (the target's share of
        all votes): what one noisy model would score on average.
    """

    prediction: np.ndarray
    attack_success_rate: float
    copy_attack_success_rate: float


def smoothed_backdoor(votes: Tensor, target: int) -> SmoothedBackdoor:
    """Smoothed ASR from ``(N, C)`` votes of the noisy copies on ``N`` backdoored inputs.

    Example
    -------
    Three inputs, 10 copies: the target 1 wins the vote on the first two.

    >>> b = smoothed_backdoor(torch.tensor([[2, 8], [4, 6], [9, 1]]), target=1)
    >>> b.prediction.tolist(), round(b.attack_success_rate, 4), round(b.copy_attack_success_rate, 4)
    ([1, 1, 0], 0.6667, 0.5)
    """
    v = votes.numpy()
    if len(v) == 0:
        return SmoothedBackdoor(np.zeros(0, dtype=np.int64), math.nan, math.nan)
    pred = v.argmax(axis=1)
    return SmoothedBackdoor(pred, float((pred == target).mean()), float(v[:, target].sum() / v.sum()))


@dataclass(frozen=True)
class Certification:
    """What parameter smoothing certified, per input and in summary.

    Attributes
    ----------
    prediction:
        ``(N,)`` smoothed prediction (top class of the votes).
    p_a, p_b:
        Hoeffding bounds of the top and runner-up class shares.
    radius:
        Certified radius (0 where :math:`p_A \\le p_B`).
    correct:
        Whether the smoothed prediction is the true label.
    """

    prediction: np.ndarray
    p_a: np.ndarray
    p_b: np.ndarray
    radius: np.ndarray
    correct: np.ndarray

    def accuracy_at(self, r: float) -> float:
        """Certified accuracy at radius ``r``: correct and certified with a radius of at least ``r`` (> 0)."""
        ok = self.correct & (self.radius > 0) & (self.radius >= r)
        return float(ok.mean()) if len(ok) else math.nan


def certify_votes(votes: Tensor, labels: Tensor, *, samples: int, alpha: float, sigma: float,
                  clip: float | Sequence[float], threat: CRFLThreat) -> Certification:
    """Certify from ``(N, C)`` votes of ``samples`` noisy models against ``(N,)`` true labels."""
    v = votes.numpy().astype(float)
    top2 = np.sort(v, axis=1)[:, ::-1][:, :2] / samples
    pred = v.argmax(axis=1)
    runner = top2[:, 1] if v.shape[1] > 1 else np.zeros(len(v))
    p_a, p_b = hoeffding_bounds(top2[:, 0], runner, samples, alpha)
    radius = certified_radius(p_a, p_b, sigma=sigma, clip=clip, threat=threat)
    return Certification(pred, p_a, p_b, radius, pred == labels.cpu().numpy())


class CRFLParams(BaseModel):
    """Parameters of ``crfl``."""

    model_config = ConfigDict(extra="forbid")
    #: rho: the cap of the clip threshold rho_t (paper, MNIST: 15); the constant threshold when crfl_clip_start is None.
    crfl_clip: float = Field(15.0, gt=0.0)
    #: rho_0: the threshold line's start, rho_t = min(rho_0 + kappa (t + 1), rho) (paper, MNIST: 2, just above the
    #: initial model's norm); None clips at the constant crfl_clip.
    crfl_clip_start: float | None = Field(2.0, gt=0.0)
    #: kappa: the threshold's growth per round (paper, MNIST: 0.1).
    crfl_clip_growth: float = Field(0.1, ge=0.0)
    #: sigma: std of the Gaussian noise added to the global model every round, and of the smoothing noise.
    crfl_sigma: float = Field(0.01, ge=0.0)
    #: M: noisy copies of the final model that vote at certification time (paper: 1000).
    crfl_samples: int = Field(1000, ge=1)
    #: alpha: error level of the Hoeffding bounds (paper: 0.001).
    crfl_alpha: float = Field(0.001, gt=0.0, lt=1.0)
    #: How many test inputs (the first ones) are certified; 0 switches certification off.
    crfl_certify_inputs: int = Field(1000, ge=0)
    #: L_Z, the Lipschitz constant in the radius (the authors' code: sqrt(17)).
    crfl_lipschitz: float = Field(PAPER_LIPSCHITZ, gt=0.0)


def check_server_lr(cfg: object) -> str | None:
    """Config check: CRFL's clip and noise act on the model, which the aggregate only matches at server.lr = 1."""
    lr = getattr(getattr(cfg, "server", None), "lr", 1.0)
    if lr != 1.0:
        return (f"server.lr: defense 'crfl' clips and perturbs the global model itself, so it needs the "
                f"server learning rate 1, got {lr}")
    return None


@RULES.register(
    "crfl",
    description="CRFL: FedAvg, then the global model clipped to norm rho_t (a growing line) and perturbed with "
    "N(0, sigma^2); "
    "certified by parameter smoothing after the run.",
    params=CRFLParams,
    reference="Xie, Chen, Chen & Li 2021, CRFL: Certifiably Robust Federated Learning against Backdoor Attacks "
    "(ICML).",
    variant="sample-weighted FedAvg; growing threshold rho_t = min(rho_0 + kappa (t + 1), rho) as in the authors' "
    "main.py (crfl_clip_start null: constant rho); constant sigma; smoothing sigma = training sigma; Hoeffding "
    "bounds; radius of the authors' cal_prob_bound with L_Z = defense.crfl_lipschitz",
    requires="none on n and f (the model's norm is clipped to rho; server.lr must be 1)",
    tags=("stochastic", "changes_scale"),
    checks=(check_server_lr,),
    filters=False,
    quiet_params={"crfl_sigma": 0.0, "crfl_clip_start": None},
)
class CRFL:
    """FedAvg whose new global model is norm-clipped and noised; carries the smoothing settings."""

    #: A first global model this many times the round's threshold gets a warning (the clip would shrink it).
    WARN_RATIO = 1.5

    def __init__(self, params: CRFLParams, *, f: int = 0) -> None:
        self.params = params
        self.f = f
        self._checked = False

    def threshold(self, round_index: int) -> float:
        """:math:`\\rho_t` of the zero-based round (:func:`clip_threshold`)."""
        p = self.params
        return clip_threshold(round_index, start=p.crfl_clip_start, growth=p.crfl_clip_growth, cap=p.crfl_clip)

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the module docstring)."""
        p = self.params
        mean, w = weighted_mean(updates, weights)
        theta = ctx.global_params.to(device=mean.device, dtype=mean.dtype)
        rho = self.threshold(ctx.round)
        if not self._checked:
            self._checked = True
            warn_if_clip_shrinks(float(torch.linalg.vector_norm(theta.double())), rho, p.crfl_clip_start,
                                 self.WARN_RATIO)
        new = crfl_step(theta, mean, clip=rho, sigma=p.crfl_sigma, generator=ctx.generator)
        before = float(torch.linalg.vector_norm((theta + mean).double()))
        agg = torch.nan_to_num(new - theta, nan=0.0, posinf=0.0, neginf=0.0)
        info = {"crfl_model_norm": before if math.isfinite(before) else 3.4e38,
                "crfl_clipped": float(before > rho), "crfl_clip": rho, "crfl_sigma": p.crfl_sigma}
        return AggregationResult(agg, w, torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device),
                                 clipped=0, info=info)
