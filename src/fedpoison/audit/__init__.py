"""Client auditing: per-client signals, anomaly flags, quarantine and reputation."""

from fedpoison.registry import Registry

AUDITORS: Registry[type] = Registry("auditor")

__all__ = ["AUDITORS"]
