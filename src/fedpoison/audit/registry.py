"""The auditor registry.

An auditor class is registered with its params model (a
:class:`~fedpoison.audit.params.PolicyParams` subclass) and built as
``cls(params, num_clients=N)``.
"""

from __future__ import annotations

from collections.abc import Callable

from fedpoison.audit.base import Auditor
from fedpoison.registry import Registry

#: Factories ``cls(params, num_clients=N)`` of auditors.
AUDITORS: Registry[Callable[..., Auditor]] = Registry("auditor")
