"""The auditor registry.

An auditor class is registered with its params model (a
:class:`~fedpoison.audit.params.PolicyParams` subclass) and built as
``cls(params, num_clients=N)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fedpoison.audit.base import Auditor
from fedpoison.registry import Registry

if TYPE_CHECKING:
    from fedpoison.config import AuditSection

#: Factories ``cls(params, num_clients=N)`` of auditors.
AUDITORS: Registry[Callable[..., Auditor]] = Registry("auditor")


def build_auditor(section: AuditSection, *, num_clients: int) -> Auditor | None:
    """The configured auditor for a federation of ``num_clients`` clients, or ``None`` for ``audit.name: none``.

    The one place an auditor is built from its config section: the round loop's
    federation and the Flower strategy both call it.
    """
    if section.name == "none":
        return None
    entry = AUDITORS.get(section.name, key="audit.name")
    auditor: Auditor = entry.obj(section.params(entry.params), num_clients=num_clients)
    return auditor
