"""Plug-ins of your own, in one file outside the package: an attack, a rule, an auditor, a partition, a model.

Use them from the command line, a grid or Python without touching fedpoison::

    fedpoison run --plugin examples/plugins/my_plugins.py --set attack.name=coordinate_noise \\
        --set attack.fraction=0.2 --set defense.name=norm_trimmed_mean --set model.name=wide_mlp

or with ``plugins: [my_plugins.py]`` in a config file (paths are read relative
to the config file). ``docs/plugins.md`` walks through each part.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from fedpoison.attacks import Attack, AttackContext, register_attack
from fedpoison.audit import AUDITORS, AuditDecision
from fedpoison.data import PARTITIONERS
from fedpoison.defenses import RULES, AggregationResult, RoundContext
from fedpoison.models import MODELS


# ---- an attack: noise on a random share of the coordinates --------------------------------------------
class CoordinateNoiseParams(BaseModel):
    """Keys of ``attack.*`` for ``coordinate_noise``."""

    model_config = ConfigDict(extra="forbid")

    #: Share of coordinates replaced by noise.
    share: float = Field(0.5, gt=0.0, le=1.0)
    #: Noise standard deviation, in units of the row's own RMS value.
    sigma: float = Field(10.0, gt=0.0)


@register_attack(
    "coordinate_noise",
    description="Each malicious row keeps its own update but replaces a random share of coordinates by noise.",
    params=CoordinateNoiseParams,
    reference="A worked example for docs/plugins.md (not from a paper).",
)
class CoordinateNoise(Attack):
    """Replace ``share`` of each malicious row's coordinates by Gaussian noise of ``sigma`` x its RMS."""

    def craft(self, ctx: AttackContext) -> Tensor:
        own = ctx.own_updates
        m, d = own.shape
        g = ctx.generator  # every draw from the generator the round loop hands over
        mask = torch.rand(m, d, generator=g, device=own.device) < self.params.share
        rms = own.pow(2).mean(dim=1, keepdim=True).sqrt()
        noise = torch.randn(m, d, generator=g, device=own.device) * self.params.sigma * rms
        return torch.where(mask, noise, own)


# ---- an aggregation rule: mean of the rows with the smallest norms ------------------------------------
class NormTrimmedMeanParams(BaseModel):
    """Keys of ``defense.*`` for ``norm_trimmed_mean``."""

    model_config = ConfigDict(extra="forbid")

    #: Share of rows kept, those with the smallest L2 norms.
    keep: float = Field(0.8, gt=0.0, le=1.0)


@RULES.register(
    "norm_trimmed_mean",
    description="Weighted mean of the rows with the smallest L2 norms (defense.keep of them).",
    params=NormTrimmedMeanParams,
    reference="A worked example for docs/plugins.md (not from a paper).",
    requires="none on n and f",
    filters=True,
)
class NormTrimmedMean:
    """Keep the ``ceil(keep * n)`` rows of smallest norm; average them with their sample weights."""

    def __init__(self, params: NormTrimmedMeanParams, *, f: int = 0) -> None:
        self.keep = params.keep

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        n = updates.shape[0]
        k = max(1, math.ceil(self.keep * n))
        norms = torch.linalg.vector_norm(updates, dim=1)
        order = torch.sort(norms, stable=True).indices  # never sorts the caller's tensor in place
        selected = torch.zeros(n, dtype=torch.bool, device=updates.device)
        selected[order[:k]] = True
        w = torch.where(selected, weights, torch.zeros_like(weights))
        w = w / w.sum()
        return AggregationResult(w @ updates, w, selected, scores=norms)


# ---- an auditor: flag rows pointing away from the median direction ------------------------------------
class CosineAuditParams(BaseModel):
    """Keys of ``audit.*`` for ``cosine_gate``."""

    model_config = ConfigDict(extra="forbid")

    #: Rows whose cosine to the coordinate-wise median is below this are flagged and dropped.
    min_cosine: float = Field(0.0, ge=-1.0, le=1.0)


@AUDITORS.register(
    "cosine_gate",
    description="Flag and drop rows whose cosine to the coordinate-wise median is below audit.min_cosine.",
    params=CosineAuditParams,
    reference="A worked example for docs/plugins.md (not from a paper).",
)
class CosineGate:
    """A stateless auditor: admits everyone, flags by cosine to the median, keeps the rest."""

    def __init__(self, params: CosineAuditParams, *, num_clients: int) -> None:
        self.min_cosine = params.min_cosine
        self.num_clients = num_clients

    def admit(self, round: int, client_ids: Tensor) -> Tensor:
        return torch.ones(len(client_ids), dtype=torch.bool)

    def screen(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AuditDecision:
        centre = updates.median(dim=0).values
        cos = torch.nn.functional.cosine_similarity(updates, centre[None, :], dim=1)
        cos = torch.nan_to_num(cos, nan=-1.0)
        flagged = cos < self.min_cosine
        return AuditDecision(keep=~flagged, weight=torch.ones(len(updates)), score=-cos.float(), flagged=flagged,
                             signals={"cosine": cos.float()})

    def observe(self, ctx: RoundContext, decision: AuditDecision, result: AggregationResult) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# ---- a partition: contiguous blocks of the label-sorted training set ----------------------------------
class LabelBlocksParams(BaseModel):
    """Keys of ``partition.*`` for ``label_blocks``."""

    model_config = ConfigDict(extra="forbid")

    #: Share of each client's block replaced by a uniform random sample (0: pure label blocks).
    mix: float = Field(0.0, ge=0.0, lt=1.0)


@PARTITIONERS.register(
    "label_blocks",
    description="Sort the training set by label and deal contiguous blocks; partition.mix of them shuffled.",
    params=LabelBlocksParams,
    reference="A worked example for docs/plugins.md (not from a paper).",
)
def label_blocks(labels: Tensor, num_clients: int, params: LabelBlocksParams, generator: torch.Generator) -> list[Tensor]:
    """One contiguous block of the label-sorted indices per client; a ``mix`` share of all indices shuffled first."""
    n = len(labels)
    order = torch.sort(labels.cpu(), stable=True).indices
    shuffled = torch.rand(n, generator=generator) < params.mix
    idx = order[shuffled[order]]
    order[shuffled[order]] = idx[torch.randperm(len(idx), generator=generator)]
    return [torch.sort(block).values for block in torch.tensor_split(order, num_clients)]


# ---- a model with params of its own -------------------------------------------------------------------
class WideMLPParams(BaseModel):
    """Keys of ``model.*`` for ``wide_mlp``."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(128, ge=1)
    depth: int = Field(2, ge=1, le=8)


@MODELS.register(
    "wide_mlp",
    description="An MLP of model.depth hidden ReLU layers of model.width units.",
    params=WideMLPParams,
)
def wide_mlp(input_shape: tuple[int, ...], num_classes: int, params: WideMLPParams) -> nn.Module:
    """``depth`` hidden layers of ``width`` units on flattened inputs."""
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = math.prod(input_shape)
    for _ in range(params.depth):
        layers += [nn.Linear(width_in, params.width), nn.ReLU()]
        width_in = params.width
    layers.append(nn.Linear(width_in, num_classes))
    return nn.Sequential(*layers)
