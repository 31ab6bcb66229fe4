"""The auditor registry.

An auditor class is registered with its params model (a
:class:`~fedpoison.audit.params.PolicyParams` subclass) and built as
``cls(params, num_clients=N)``.
"""

from __future__ import annotations

from fedpoison.registry import Registry

AUDITORS: Registry[type] = Registry("auditor")
