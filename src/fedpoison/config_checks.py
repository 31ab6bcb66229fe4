"""Configs that do nothing: settings that a run silently ignores, caught before it starts.

A config can be valid key by key and still not mean what it says:

* **an attack with no attackers** (``attack.name=sign_flip`` with neither
  ``attack.fraction`` nor ``attack.count`` set, or a fraction that rounds to
  zero clients) runs as a no-attack run under an attack's name. That is an
  error: the run cannot mean anything. An explicit ``attack.fraction=0`` or
  ``attack.count=0`` is a warning (a deliberate no-attack baseline);
* **attack settings with no attack** (``attack.fraction=0.2`` with
  ``attack.name=none``): no client is malicious, so they change nothing. A
  warning;
* **an attack whose schedule never fires** within the run's rounds
  (``attack.start_round`` at or past ``rounds``, ``attack.probability=0``). A
  warning.

:func:`check_run_config` raises the errors and emits the warnings as
:class:`ConfigWarning`; the command line prints each as one ``warning:`` line.
In a grid, a warning about a key the grid varies is not shown: a sweep over
``attack.name: [none, sign_flip]`` with a shared ``attack.fraction`` means the
fraction for the attack runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from fedpoison.errors import ConfigError

#: Attack settings that only matter when there is an attack, with their defaults.
_ATTACK_SETTINGS: dict[str, Any] = {
    "fraction": 0.0, "count": None, "knowledge": "local", "always_participate": False, "collude": False,
    "start_round": 0, "end_round": None, "every": 1, "probability": 1.0,
}


class ConfigWarning(UserWarning):
    """A config setting that has no effect on the run."""


@dataclass(frozen=True)
class NoEffect:
    """A setting that does nothing.

    Attributes
    ----------
    keys:
        The dotted config keys involved.
    message:
        One line naming the keys, their values and why they do nothing.
    """

    keys: tuple[str, ...]
    message: str


def meaningless(cfg: Any) -> str | None:
    """Why the run cannot mean anything (an attack with no attackers it was asked for), or ``None``."""
    a = cfg.attack
    if a.name == "none" or cfg.num_malicious > 0:
        return None
    n = cfg.clients.num
    explicit = a.model_fields_set
    if a.count is None and "fraction" not in explicit:
        return (f"attack.fraction: attack '{a.name}' has no attackers: attack.fraction and attack.count are "
                f"unset, so 0 of {n} clients are malicious (set attack.fraction, e.g. attack.fraction=0.2, "
                f"or attack.count)")
    if a.count is None and a.fraction > 0:
        return (f"attack.fraction: {a.fraction} of clients.num={n} rounds to 0 attackers for attack "
                f"'{a.name}'; expected a fraction of at least {1 / (2 * n):.3g} (half a client), or set "
                "attack.count")
    return None


def ineffective_settings(cfg: Any) -> list[NoEffect]:
    """The settings of ``cfg`` that do nothing (see the module docstring); warnings, not errors."""
    a = cfg.attack
    found: list[NoEffect] = []
    if a.name == "none":
        extra = a.model_extra or {}
        idle = [k for k, default in _ATTACK_SETTINGS.items() if getattr(a, k) != default]
        if idle or extra:
            shown = ", ".join([f"attack.{k}={getattr(a, k)}" for k in idle] + [f"attack.{k}" for k in extra])
            found.append(NoEffect(("attack.name", *(f"attack.{k}" for k in [*idle, *extra])),
                                  f"{shown} has no effect: attack.name is none, so no client is malicious"))
        return found
    if cfg.num_malicious == 0:
        which = f"attack.count={a.count}" if a.count is not None else f"attack.fraction={a.fraction}"
        found.append(NoEffect(("attack.fraction", "attack.count"),
                              f"attack '{a.name}' has no attackers ({which}): the run is a no-attack baseline"))
        return found
    if a.start_round >= cfg.rounds:
        found.append(NoEffect(("attack.start_round", "rounds"),
                              f"attack.start_round={a.start_round} is not before rounds={cfg.rounds}: attack "
                              f"'{a.name}' never fires (rounds are numbered from 0)"))
    elif a.probability == 0:
        found.append(NoEffect(("attack.probability",),
                              f"attack.probability=0: attack '{a.name}' never fires"))
    return found


def check_run_config(cfg: Any, *, varied: Collection[str] = (), emit: bool = True) -> list[NoEffect]:
    """Raise :class:`ConfigError` for a run that cannot mean anything; warn about settings that do nothing.

    Parameters
    ----------
    cfg:
        A validated :class:`~fedpoison.config.ExperimentConfig`.
    varied:
        Dotted keys that a grid varies: warnings about them are left out.
    emit:
        Emit the warnings as :class:`ConfigWarning` (else only return them).

    Returns
    -------
    list of NoEffect
        The warnings kept.
    """
    error = meaningless(cfg)
    if error is not None:
        raise ConfigError(error)
    kept = [w for w in ineffective_settings(cfg) if not set(w.keys) & set(varied)]
    if emit:
        for w in kept:
            warnings.warn(w.message, ConfigWarning, stacklevel=2)
    return kept


def print_config_warnings(console: Any) -> None:
    """Show :class:`ConfigWarning` s as one ``warning: ...`` line on ``console``; others as before."""
    previous = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ConfigWarning):
            from rich.markup import escape

            console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            previous(message, category, *args, **kwargs)

    warnings.showwarning = show
