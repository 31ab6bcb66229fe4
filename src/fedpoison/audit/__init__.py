"""Client auditing: per-client signals, anomaly flags, quarantine and reputation.

An auditor class is registered in :data:`AUDITORS` with its params model and
built as ``cls(params, num_clients=N)``.
"""

from fedpoison.audit.base import AuditDecision, Auditor
from fedpoison.registry import Registry

AUDITORS: Registry[type] = Registry("auditor")

__all__ = ["AUDITORS", "AuditDecision", "Auditor"]
