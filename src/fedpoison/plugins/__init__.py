"""Plug-ins: the resolution layer between configs and registries, and plug-ins of your own.

- :func:`load_config` / :func:`validate_config`: parse a config and resolve its
  plug-in sections (the public way to build a config).
- :func:`load_plugins`: import plug-in files or modules once per process.
- :func:`registries`: every family's registry, by its ``fedpoison list`` name.

See ``docs/plugins.md`` for writing your own attack, rule, auditor, partition,
dataset or model.
"""

from fedpoison.plugins.families import FAMILY_NAMES, registries
from fedpoison.plugins.loading import ENTRY_POINT_GROUP, load_entry_points, load_plugins
from fedpoison.plugins.resolve import (
    load_config,
    plugins_of,
    resolve_config,
    resolve_section,
    section_entries,
    validate_config,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FAMILY_NAMES",
    "load_config",
    "load_entry_points",
    "load_plugins",
    "plugins_of",
    "registries",
    "resolve_config",
    "resolve_section",
    "section_entries",
    "validate_config",
]
