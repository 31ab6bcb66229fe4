"""``norm_mad``: flag clients whose update norm is a robust outlier.

The score of row :math:`i` is the robust z-score of its L2 norm over the
round's participants,

.. math:: z_i = \\frac{\\|u_i\\| - \\operatorname{med}_j \\|u_j\\|}{1.4826\\, \\operatorname{MAD}_j \\|u_j\\|}

(:func:`~fedpoison.audit.signals.robust_z`), flagged above ``audit.threshold``
(upper tail; ``audit.tail: both`` also flags unusually small norms). It is the
norm-monitoring step of the anomaly-detection defenses in the literature (e.g.
the norm-difference test of Sun et al. 2019, 'Can You Really Backdoor
Federated Learning?', here with a median/MAD threshold in place of a fixed
bound). It catches boosted updates (``scaling``, ``model_replacement``) and
misses attacks whose rows keep an honest norm, ALIE first among them
(see ``docs/auditing.md``).
"""

from __future__ import annotations

from fedpoison.audit.params import NormMADParams
from fedpoison.audit.registry import AUDITORS
from fedpoison.audit.signal_auditor import SignalAuditor


@AUDITORS.register(
    "norm_mad",
    description="Robust z-score (median/MAD) of the update norm; flag above audit.threshold.",
    params=NormMADParams,
    reference="Median/MAD outlier test (Iglewicz & Hoaglin 1993) on update norms, cf. Sun et al. 2019 norm test.",
    signals="norm",
)
class NormMAD(SignalAuditor):
    """Norm-only robust z-score auditor (no history)."""

    def __init__(self, params: NormMADParams, *, num_clients: int) -> None:
        super().__init__(params, num_clients=num_clients, tails={"norm": params.tail})
