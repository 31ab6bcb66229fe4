"""Configs that do nothing: settings that a run silently ignores, caught before it starts.

A config can be valid key by key and still not mean what it says:

* **an attack with no attackers** (``attack.name=sign_flip`` with neither
  ``attack.fraction`` nor ``attack.count`` set, ``attack.count=0``, or a
  fraction that rounds to zero clients) runs as a no-attack run under an
  attack's name. That is an error: the run cannot mean anything. In a grid
  that varies ``attack.fraction`` (or ``attack.count``), a zero is the start
  of the sweep and passes;
* **attack settings with no attack** (``attack.fraction=0.2`` with
  ``attack.name=none``): no client is malicious, so they change nothing. A
  warning;
* **an attack whose schedule never fires** within the run's rounds
  (``attack.start_round`` at or past ``rounds``, ``attack.probability=0``). A
  warning.

:func:`check_run_config` raises the errors and emits the warnings as
:class:`ConfigWarning`; the command line prints each as one ``warning:`` line
(:func:`print_warnings_as_lines`).
In a grid, a warning about a key the grid varies is not shown: a sweep over
``attack.name: [none, sign_flip]`` with a shared ``attack.fraction`` means the
fraction for the attack runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from fedpoison.errors import ConfigError, FedPoisonWarning

#: Attack settings that only matter when there is an attack, with their defaults.
_ATTACK_SETTINGS: dict[str, Any] = {
    "fraction": 0.0, "count": None, "fake_clients": 0, "knowledge": "local", "always_participate": False, "collude": False,
    "start_round": 0, "end_round": None, "every": 1, "probability": 1.0,
}


class ConfigWarning(FedPoisonWarning):
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


def meaningless(cfg: Any, varied: Collection[str] = ()) -> str | None:
    """Why the run cannot mean anything (an attack with no attackers), or ``None``.

    A grid that varies ``attack.fraction`` or ``attack.count`` may hold a zero
    on purpose (the start of a sweep): an exact zero of a varied key passes.
    """
    a = cfg.attack
    if a.name == "none" or cfg.num_attackers > 0:
        return None
    n = cfg.clients.num
    if a.count is not None:
        if "attack.count" in varied:
            return None
        return (f"attack.count: attack '{a.name}' has no attackers (attack.count=0); expected at least 1 "
                "(for a run without attack, set attack.name=none)")
    if a.fraction > 0:
        return (f"attack.fraction: {a.fraction} of clients.num={n} rounds to 0 attackers for attack "
                f"'{a.name}'; expected a fraction above {1 / (2 * n):.3g}, so that fraction x clients.num "
                "rounds to at least 1, or set attack.count")
    if "attack.fraction" in varied:
        return None
    return (f"attack.fraction: attack '{a.name}' has no attackers: attack.fraction is 0 and attack.count is "
            f"unset, so 0 of {n} clients are malicious (set attack.fraction, e.g. attack.fraction=0.2, or "
            "attack.count; for a run without attack, set attack.name=none)")


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
    if cfg.num_attackers == 0:
        return found  # an error, or a zero point of a grid's sweep (see meaningless)
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
    error = meaningless(cfg, varied)
    if error is not None:
        raise ConfigError(error)
    kept = [w for w in ineffective_settings(cfg) if not set(w.keys) & set(varied)]
    if emit:
        for w in kept:
            warnings.warn(w.message, ConfigWarning, stacklevel=2)
    return kept


def print_warnings_as_lines(console: Any) -> None:
    """Show fedpoison's warnings (:class:`~fedpoison.errors.FedPoisonWarning`) as one ``warning: ...`` line.

    Other warnings keep Python's format.
    """
    previous = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, FedPoisonWarning):
            from rich.markup import escape

            console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            previous(message, category, *args, **kwargs)

    warnings.showwarning = show
