"""``multi_signal``: one suspicion score from several signals and the client's history.

Per round, each configured signal (norm, cosine to the centre, distance to
the centre, Krum score, sign agreement; see :mod:`fedpoison.audit.signals`)
gets a robust z-score over the participants, oriented so that positive is
suspicious. The round score is the mean of their positive parts
(``audit.combine: mean``) or their maximum (``max``):

.. math:: z_i = \\frac{1}{|S|} \\sum_{s \\in S} \\max(\\tilde z_{i,s}, 0)

and the suspicion blends in the client's history :math:`h_i`, an
exponentially weighted mean of its past round scores (over the rounds it took
part in, each capped at twice the threshold):

.. math:: \\text{suspicion}_i = (1 - w)\\, z_i + w\\, h_i

with :math:`w` = ``audit.history_weight``. A client flagged once carries
some suspicion into the next rounds; an honest client's one-off outlier is
damped by its clean past. The combination is fedpoison's own; the signals
come from Krum (Blanchard et al. 2017), FLTrust/FoolsGold-style cosine
checks and SignGuard (Xu et al. 2022).
"""

from __future__ import annotations

from fedpoison.audit.params import MultiSignalParams
from fedpoison.audit.registry import AUDITORS
from fedpoison.audit.signal_auditor import SignalAuditor, signal_tails


@AUDITORS.register(
    "multi_signal",
    description="Combined robust z-score of norm, cosine, distance, Krum score and sign agreement, with EWMA history.",
    params=MultiSignalParams,
    reference="Median/MAD z-scores of Krum (Blanchard et al. 2017), cosine and sign (SignGuard, Xu et al. 2022) signals.",
    signals="norm, cosine, distance, krum, sign_agreement",
)
class MultiSignal(SignalAuditor):
    """Several signals, combined, with per-client EWMA history."""

    def __init__(self, params: MultiSignalParams, *, num_clients: int) -> None:
        super().__init__(
            params,
            num_clients=num_clients,
            tails=signal_tails(params.signals, params.norm_tail),
            centre=params.centre,
            combine=params.combine,
            history_weight=params.history_weight,
            history_decay=params.history_decay,
            krum_f=params.krum_f,
        )
