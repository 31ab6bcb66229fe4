"""The attack registry.

An attack is an :class:`~fedpoison.attacks.base.Attack` subclass registered with
its params model, built as
``cls(params, num_classes=C, input_shape=shape, collude=False)``.
Its ``kind``, ``knowledge`` and ``trains`` class attributes are copied into the
registry entry's ``meta`` by :func:`register_attack`, so ``fedpoison list
attacks`` can show them without building the attack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from fedpoison.registry import ConfigCheck, Registry

if TYPE_CHECKING:
    from fedpoison.attacks.base import Attack

ATTACKS: Registry[type[Attack]] = Registry("attack")

A = TypeVar("A", bound="type[Attack]")


def register_attack(
    name: str,
    *,
    description: str,
    params: type[BaseModel],
    reference: str,
    variant: str = "",
    tags: Iterable[str] = (),
    checks: Iterable[ConfigCheck] = (),
    **meta: object,
) -> Callable[[A], A]:
    """Register an attack class in :data:`ATTACKS` with its kind and knowledge as meta.

    Equivalent to ``@ATTACKS.register(name, ..., kind=cls.kind.value,
    knowledge=cls.knowledge.value, trains=cls.trains)``.
    """

    def decorate(cls: A) -> A:
        facts: dict[str, Any] = {
            "kind": cls.kind.value,
            "knowledge": cls.knowledge.value,
            "trains": cls.trains,
            "owns_training": cls.owns_training,
            **meta,
        }
        ATTACKS.register(
            name, description=description, params=params, reference=reference, variant=variant,
            tags=tags, checks=checks, **facts,
        )(cls)
        return cls

    return decorate
