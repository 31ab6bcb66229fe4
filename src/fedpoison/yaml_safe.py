"""Reading YAML with limits: size, UTF-8, nesting depth and alias expansion.

PyYAML's safe loader already refuses arbitrary objects; it does not bound what
a small file can expand to. An "alias bomb" (anchors nested nine deep, nine
aliases each) is a few hundred bytes and a billion nodes; an alias cycle
(``a: &a [*a]``) is infinite; a file nested ten thousand levels deep crashes
with a RecursionError. :func:`load_yaml` refuses each of them with one
:class:`~fedpoison.errors.ConfigError` line, before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fedpoison.errors import ConfigError

#: Largest config or grid file read (bytes).
MAX_BYTES = 1 << 20
#: Deepest nesting of mappings and sequences.
MAX_DEPTH = 64
#: Most nodes the document may hold once every alias is expanded.
MAX_NODES = 200_000


class _LimitedLoader(yaml.SafeLoader):
    """A safe loader that tracks nesting depth and refuses alias cycles while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open: set[str] = set()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self._open:
                mark = self.peek_event().start_mark
                raise ConfigError(f"alias *{anchor} refers to its own anchor (a cycle) at line {mark.line + 1}")
            return Composer.compose_node(self, parent, index)
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConfigError(f"nested deeper than {MAX_DEPTH} levels at line {event.start_mark.line + 1}")
        if anchor is not None:
            self._open.add(anchor)
        try:
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Nodes in ``node`` with every alias expanded (shared nodes counted each time they appear)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if isinstance(node, ScalarNode):
        size = 1
    elif isinstance(node, SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:  # pragma: no cover - PyYAML has only these three node kinds
        size = 1
    memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


def load_yaml(text: str | bytes, where: str) -> Any:
    """Parse one YAML document within the limits; every failure is one ConfigError line naming ``where``."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise ConfigError(f"{where}: expected at most {MAX_BYTES} bytes, got {len(text)}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: expected UTF-8 text, got byte 0x{text[exc.start]:02x} at offset {exc.start}") from None
    elif len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: expected at most {MAX_BYTES} characters, got {len(text)}")
    loader: _LimitedLoader | None = None
    try:
        loader = _LimitedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise ConfigError(f"expands to more than {MAX_NODES} values once its aliases are expanded "
                              "(an alias bomb?)")
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(exc).split())[:300]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """Read and parse a YAML file with :func:`load_yaml`; a file that cannot be read is one ConfigError line."""
    p = Path(path)
    where = f"{what} {p}"
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{where}: expected at most {MAX_BYTES} bytes, got {size}")
        with open(p, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    return load_yaml(data, where)
