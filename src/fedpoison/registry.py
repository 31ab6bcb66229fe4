"""One registry type, used once per plug-in family.

Every plug-in family (datasets, partitioners, models, attacks, defenses,
pre-aggregators, auditors) keeps a :class:`Registry`. Plug-ins register with a
decorator; the CLI's ``list`` command, config validation and error messages all
read from the registry, so a name is defined in exactly one place.

Example
-------
>>> from pydantic import BaseModel
>>> demo: Registry[object] = Registry("demo")
>>> @demo.register("hello", description="Says hello.")
... def hello() -> str:
...     return "hello"
>>> demo.get("hello").obj()
'hello'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from fedpoison.errors import ConfigError

T = TypeVar("T")


class NoParams(BaseModel):
    """Parameter model of a plug-in that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered plug-in.

    Attributes
    ----------
    name:
        Registry name, as used in configs (``attack.name: alie``).
    obj:
        The registered object (a class or a factory function).
    description:
        One line shown by ``fedpoison list``.
    params:
        Pydantic model of the plug-in's own config keys. Keys outside it are
        rejected by config validation.
    reference:
        The paper the plug-in implements, with the exact variant.
    meta:
        Family-specific facts (an attack's kind and knowledge, a rule's
        requirement on f, ...), shown by ``fedpoison list``.
    """

    name: str
    obj: T
    description: str
    params: type[BaseModel] = NoParams
    reference: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


def suggest(name: str, choices: list[str]) -> str:
    """Return ``", did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f", did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A named dict of plug-ins that refuses duplicates and unknown names."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        *,
        description: str,
        params: type[BaseModel] = NoParams,
        reference: str = "",
        **meta: Any,
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.family} '{name}' is already registered")
            self._entries[name] = Entry(name, obj, description, params, reference, dict(meta))
            return obj

        return decorate

    def get(self, name: str, *, key: str | None = None) -> Entry[T]:
        """Return the entry for ``name``; unknown names raise :class:`ConfigError`.

        ``key`` is the config key being resolved, named in the error message.
        """
        try:
            return self._entries[name]
        except KeyError:
            where = f"{key}: " if key else ""
            known = sorted(self._entries)
            raise ConfigError(
                f"{where}unknown {self.family} '{name}'{suggest(name, known)} "
                f"(expected one of: {', '.join(known)})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
