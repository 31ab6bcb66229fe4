"""One plug-in contract and one registry type, used once per plug-in family.

Every plug-in family (datasets, partitions, models, attacks, aggregation rules,
pre-aggregators, auditors) keeps a :class:`Registry`. A plug-in is

- a **name**, as used in configs (``attack.name: alie``);
- a **params model**: a pydantic model with ``extra="forbid"`` holding the
  plug-in's own config keys (``attack.scale``);
- a **factory**: the registered class or function, called by the family's
  build function with the validated params;
- **metadata**: the paper and the exact variant, the requirement on ``n`` and
  ``f`` (:class:`Requirement`), tags read by the contract checks of
  :mod:`fedpoison.testing` (``stochastic``, ``stateful``, ...), whole-config
  checks, and family facts (an attack's knowledge, a dataset's input shape).

``fedpoison list``, config validation, the call-time checks and the docs all
read the registry, so each fact is written once.

This module imports nothing else of fedpoison but its errors: it sits at the
bottom of the import graph.

Example
-------
>>> demo: Registry[object] = Registry("demo")
>>> @demo.register("hello", description="Says hello.")
... def hello() -> str:
...     return "hello"
>>> demo.get("hello").obj()
'hello'
>>> _ = demo.register("hello", description="Says hello.")(hello)  # the same object again: a no-op
>>> len(demo)
1
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from fedpoison.errors import ConfigError

T = TypeVar("T")

#: Tags the contract checks of :mod:`fedpoison.testing` read. A plug-in declares
#: the ones that hold for it; checks never branch on names.
KNOWN_TAGS: Mapping[str, str] = {
    "stochastic": "draws from the generator it is given (results differ across seeds)",
    "stateful": "keeps state across rounds (state_dict / load_state_dict)",
    "per_client_state": "keys its state by client id, so rows must not be regrouped before it",
    "needs_history": "an auditor that flags only after rounds of history (nothing in its first round)",
    "order_dependent": "output rows depend on the row order (random buckets)",
    "changes_scale": "may return a result that is not a combination of its input rows (clipping, noise)",
    "needs_root_data": "needs the server's own data (counted in the threat model)",
    "fake_clients": "sends rows for clients that own no data",
    "sends_nonfinite": "sends NaN or infinite rows on purpose (fault injection)",
}


class NoParams(BaseModel):
    """Parameter model of a plug-in that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Requirement:
    """A rule's or pre-aggregator's requirement on ``n`` rows and ``f`` Byzantine rows.

    Declared once, in the plug-in's registration. Config validation checks it
    when the rows per round are known, the defense checks it before every call,
    and ``fedpoison list`` and the docs show :attr:`text`.

    Attributes
    ----------
    text:
        The requirement in words, e.g. ``"n >= 2f + 3"``.
    holds:
        ``holds(n, f, params) -> bool``; ``params`` is the plug-in's validated
        params instance. ``None`` means no requirement on ``n`` and ``f``.

    Examples
    --------
    >>> krum = Requirement("n >= 2f + 3", lambda n, f, p: n >= 2 * f + 3)
    >>> krum.violated(7, 2, None), krum.violated(6, 2, None)
    (False, True)
    """

    text: str
    holds: Callable[[int, int, Any], bool] | None = None

    def violated(self, n: int, f: int, params: Any) -> bool:
        """Whether ``n`` rows and ``f`` Byzantine rows break the requirement."""
        return self.holds is not None and not self.holds(n, f, params)


#: A whole-config check declared by a plug-in: ``check(config) -> message or None``.
ConfigCheck = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered plug-in.

    Attributes
    ----------
    name:
        Registry name, as used in configs.
    obj:
        The factory: the registered class or function.
    description:
        One line shown by ``fedpoison list``.
    params:
        Pydantic model of the plug-in's own config keys (``extra="forbid"``).
    reference:
        The paper the plug-in implements.
    variant:
        The exact variant implemented, where the paper or its implementations
        leave a choice.
    requires:
        The requirement on ``n`` and ``f``, or ``None``.
    tags:
        Facts the contract checks read (:data:`KNOWN_TAGS`).
    checks:
        Whole-config checks run by config validation when this plug-in is chosen.
    meta:
        Family facts (an attack's kind and knowledge, a dataset's input shape).
    """

    name: str
    obj: T
    description: str
    params: type[BaseModel] = NoParams
    reference: str = ""
    variant: str = ""
    requires: Requirement | None = None
    tags: frozenset[str] = frozenset()
    checks: tuple[ConfigCheck, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def has(self, tag: str) -> bool:
        """Whether the plug-in declares ``tag``."""
        return tag in self.tags


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every module of a plug-in package, so each one registers its plug-ins.

    A package's ``__init__`` calls it with its ``__name__`` and ``__path__``:
    adding a plug-in to fedpoison is then one new module, with no import list
    to keep up to date.
    """
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``", did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f", did you mean '{close[0]}'?" if close else ""


def _origin(obj: object) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if isinstance(module, str) and isinstance(qualname, str) else None


class Registry(Generic[T]):
    """A named dict of plug-ins that refuses clashes and unknown names.

    Registering the same object twice is a no-op. Registering a new definition
    from the same place (same module and qualified name: a notebook cell run
    again, a module reloaded) replaces the old one. Any other object under a
    taken name is an error.
    """

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
        variant: str = "",
        requires: Requirement | str | None = None,
        tags: Iterable[str] = (),
        checks: Iterable[ConfigCheck] = (),
        **meta: Any,
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        ``requires`` may be a :class:`Requirement` or, for a requirement that
        is not on ``n`` and ``f`` (it is shown, never checked), plain words.
        """
        if not isinstance(name, str) or not name or not name.replace("_", "a").replace("-", "a").isalnum():
            raise ValueError(f"{self.family} name: expected letters, digits, '_' or '-', got {name!r}")
        extra = params.model_config.get("extra")
        if extra != "forbid":
            raise ValueError(
                f"{self.family} '{name}': params model {params.__name__} must forbid unknown keys "
                f"(model_config = ConfigDict(extra='forbid')), got extra={extra!r}"
            )
        unknown = sorted(set(tags) - set(KNOWN_TAGS))
        if unknown:
            raise ValueError(f"{self.family} '{name}': unknown tags {unknown} (known: {', '.join(KNOWN_TAGS)})")
        requirement = Requirement(requires) if isinstance(requires, str) else requires

        def decorate(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None and old.obj is obj:
                return obj  # the same object again (a module imported twice): a no-op
            if old is not None and (_origin(old.obj) is None or _origin(old.obj) != _origin(obj)):
                where = ".".join(_origin(old.obj) or ("?", "?"))
                raise ValueError(f"{self.family} '{name}' is already registered (by {where}); choose another name")
            self._entries[name] = Entry(
                name, obj, description, params, reference, variant, requirement,
                frozenset(tags), tuple(checks), dict(meta),
            )
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and interactive sessions); unknown names are ignored."""
        self._entries.pop(name, None)

    def get(self, name: str, *, key: str | None = None) -> Entry[T]:
        """Return the entry for ``name``; unknown names raise :class:`ConfigError`.

        ``key`` is the config key being resolved, named in the error message.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{key}: " if key else ""
            known = sorted(self._entries)
            shown = name if isinstance(name, str) else repr(name)
            raise ConfigError(
                f"{where}unknown {self.family} '{shown}'{suggest(str(name), known)} "
                f"(expected one of: {', '.join(known)}; plug-ins of your own load with --plugin FILE)"
            ) from None

    def taking(self, key: str) -> list[str]:
        """Names of the plug-ins whose params model has ``key``."""
        return [e.name for e in self if key in e.params.model_fields]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
