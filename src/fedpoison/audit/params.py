"""Parameter models shared by the auditors (``audit.*`` keys).

Every auditor's params model subclasses :class:`PolicyParams`, so the policy
keys mean the same thing whichever auditor is chosen. ``extra="forbid"``:
config validation rejects a key no auditor parameter declares.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PolicyParams(BaseModel):
    """What every auditor does with its flags (see :mod:`fedpoison.audit.policies`)."""

    model_config = ConfigDict(extra="forbid")

    #: flag (record only), exclude (drop flagged rows this round), quarantine, reputation.
    policy: Literal["flag", "exclude", "quarantine", "reputation"] = "exclude"
    #: A row is flagged when its suspicion score exceeds this many (robust, MAD-based) standard deviations.
    threshold: float = Field(3.0, gt=0.0)
    #: Rounds (that it would have joined) a client sits out after its first flag.
    quarantine_rounds: int = Field(3, ge=1)
    #: Each repeat offence multiplies the quarantine by this (1: constant).
    quarantine_growth: float = Field(2.0, ge=1.0)
    #: Longest quarantine, in rounds the client would have joined; unbounded when unset.
    max_quarantine: int | None = Field(None, ge=1)
    #: Share of the gap to full trust a participant's reputation recovers each round.
    reputation_recovery: float = Field(0.1, ge=0.0, le=1.0)
    #: A flag multiplies the reputation by this.
    reputation_penalty: float = Field(0.25, ge=0.0, le=1.0)
    #: Rows of clients with reputation below this are excluded.
    reputation_floor: float = Field(0.5, ge=0.0, le=1.0)
    #: weight: the kept rows' FedAvg weights are multiplied by the reputation; exclude: only the floor acts.
    reputation_mode: Literal["weight", "exclude"] = "weight"
    #: Fewer participants than this: nothing is flagged (a MAD over two rows means little),
    #: except non-finite rows, which are always flagged.
    min_rows: int = Field(3, ge=1)
    #: A row the defense's rule did not select (Krum, FLAME, DnC...) also counts as a flag for the
    #: quarantine and the reputation, from the next round on.
    rule_flags: bool = False


class NormMADParams(PolicyParams):
    """Parameters of ``norm_mad``."""

    #: upper: only unusually large norms are suspicious (boosting); both: small ones too (free riders).
    tail: Literal["upper", "both"] = "upper"


SignalName = Literal["norm", "cosine", "distance", "krum", "sign_agreement"]
ALL_SIGNALS: tuple[SignalName, ...] = ("norm", "cosine", "distance", "krum", "sign_agreement")


class MultiSignalParams(PolicyParams):
    """Parameters of ``multi_signal``."""

    #: Signals combined into the suspicion score.
    signals: list[SignalName] = Field(default_factory=lambda: list(ALL_SIGNALS), min_length=1)
    #: Robust centre for cosine, distance and sign agreement: this round's coordinate-wise median,
    #: or the previous round's aggregate (the median in the first round).
    centre: Literal["median", "previous_aggregate"] = "median"
    #: How the signals' robust z-scores are combined: mean of their positive parts, or their maximum.
    combine: Literal["mean", "max"] = "mean"
    #: Weight of the client's history (EWMA of its past scores) in its suspicion score.
    history_weight: float = Field(0.3, ge=0.0, lt=1.0)
    #: EWMA decay per round the client takes part: h <- decay * h + (1 - decay) * score.
    history_decay: float = Field(0.5, ge=0.0, lt=1.0)
    #: f of the Krum score (neighbours n - f - 2); by default floor((n - 3) / 2).
    krum_f: int | None = Field(None, ge=0)
    #: norm: upper, or both tails (free riders send tiny updates).
    norm_tail: Literal["upper", "both"] = "upper"

    @field_validator("signals")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"expected distinct signals ({repeated[0]!r} repeats)")
        return value
