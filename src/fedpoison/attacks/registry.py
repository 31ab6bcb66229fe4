"""The attack registry.

An attack is an :class:`~fedpoison.attacks.base.Attack` subclass registered with
its params model, built as ``cls(params, num_classes=C, input_shape=shape)``.
Its ``kind`` and ``knowledge`` class attributes are shown by ``fedpoison list attacks``.
"""

from __future__ import annotations

from fedpoison.registry import Registry

ATTACKS: Registry[type] = Registry("attack")
