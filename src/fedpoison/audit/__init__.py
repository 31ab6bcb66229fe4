"""Client auditing: per-client signals, anomaly flags, quarantine and reputation.

An auditor class is registered in :data:`AUDITORS` with its params model and
built as ``cls(params, num_clients=N)``.
"""

from fedpoison.audit import multi_signal, norm_mad  # noqa: F401  (registration)
from fedpoison.audit.base import AuditDecision, Auditor
from fedpoison.audit.registry import AUDITORS, build_auditor

__all__ = ["AUDITORS", "AuditDecision", "Auditor", "build_auditor"]
