"""Client auditing: per-client signals, anomaly flags, quarantine and reputation.

An auditor class is registered in :data:`AUDITORS` with its params model and
built as ``cls(params, num_clients=N)``.
"""

from fedpoison.audit.base import AuditDecision, Auditor
from fedpoison.audit.registry import AUDITORS, build_auditor
from fedpoison.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["AUDITORS", "AuditDecision", "Auditor", "build_auditor"]
