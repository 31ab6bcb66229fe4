"""Load plug-ins of your own: ``.py`` files, modules, and installed packages.

A plug-in file or module registers its plug-ins when it is imported, with the
family's decorator (``@register_attack``, ``@RULES.register``, ...). It is
loaded at most once per process: a second load of the same file or module is
a no-op, so configs, grid workers and notebooks can ask for it freely.

Three ways to name plug-ins, all loaded in every process that runs a run:

- ``plugins: [my_plugins.py, mypkg.attacks]`` in a config (paths are read
  relative to the config file);
- ``--plugin FILE_OR_MODULE`` on any command, which adds to the config's list;
- the ``fedpoison.plugins`` entry-point group of an installed package, loaded
  by itself the first time plug-ins are looked up.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from fedpoison.errors import ConfigError

#: The entry-point group an installed package of plug-ins declares.
ENTRY_POINT_GROUP = "fedpoison.plugins"

_lock = threading.RLock()
_loaded: dict[str, ModuleType] = {}
_entry_points_loaded = False


def is_path(spec: str) -> bool:
    """Whether a plug-in spec names a file (``.py``) rather than a module."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _module_name(path: Path) -> str:
    """A stable module name for a plug-in file: the same file always gets the same name."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"fedpoison_user_plugins.{stem}_{digest}"


def _load_file(spec: str, where: str) -> ModuleType:
    path = Path(spec).expanduser().resolve()
    key = f"file:{path}"
    if key in _loaded:
        return _loaded[key]
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise ConfigError(f"{where}: expected a plug-in .py file or a module name, got '{spec}' ({what})")
    name = _module_name(path)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{where}: expected a Python file, got '{spec}'")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before executing: dataclasses and pickling look it up
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{where}: loading '{path}' raised {type(exc).__name__}: {exc}") from None
    _loaded[key] = module
    return module


def _load_module(spec: str, where: str) -> ModuleType:
    key = f"module:{spec}"
    if key in _loaded:
        return _loaded[key]
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise ConfigError(
                f"{where}: expected an importable module or a .py file, got '{spec}' (no module named "
                f"'{exc.name}')"
            ) from None
        raise ConfigError(f"{where}: importing '{spec}' raised ModuleNotFoundError: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"{where}: importing '{spec}' raised {type(exc).__name__}: {exc}") from None
    _loaded[key] = module
    return module


def load_plugins(specs: Iterable[str], *, key: str = "plugins") -> list[ModuleType]:
    """Import each plug-in file or module once; return the modules.

    Errors are one-line :class:`~fedpoison.errors.ConfigError` naming ``key``
    and the spec.
    """
    modules = []
    with _lock:
        for i, spec in enumerate(specs):
            where = f"{key}[{i}]"
            if not isinstance(spec, str) or not spec.strip():
                raise ConfigError(f"{where}: expected a .py path or a module name, got {spec!r}")
            modules.append(_load_file(spec, where) if is_path(spec) else _load_module(spec, where))
    return modules


def load_entry_points() -> None:
    """Load every installed package's ``fedpoison.plugins`` entry points, once per process.

    An entry point names a module (imported) or a callable (imported, then
    called with no arguments).
    """
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, ModuleType):
                    obj()
            except Exception as exc:
                _entry_points_loaded = False
                dist = getattr(getattr(ep, "dist", None), "name", "?")
                raise ConfigError(
                    f"entry point '{ep.name} = {ep.value}' of package '{dist}' (group {ENTRY_POINT_GROUP}): "
                    f"loading it raised {type(exc).__name__}: {exc}"
                ) from None


def absolute_specs(specs: Iterable[str], base: Path | None = None) -> list[str]:
    """Plug-in specs with ``.py`` paths made absolute (relative to ``base``, default the working directory)."""
    root = base or Path.cwd()
    return [str((root / s).expanduser().resolve()) if is_path(s) else s for s in specs]
