"""Where each named parameter tensor lives in the flat parameter vector.

The models' :class:`~fedpoison.models.ParamSpec`, the Flower adapter's array
layout and the per-layer defenses (layer-wise clipping) all describe a flat
vector by the same slices.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamSlice:
    """Where one named parameter tensor lives in the flat vector.

    Attributes
    ----------
    name:
        The parameter's name (``fc1.weight``).
    start, end:
        Its elements are ``flat[start:end]``.
    shape:
        The tensor's shape; ``end - start`` is its number of elements.

    Example
    -------
    >>> s = ParamSlice("fc.bias", 6, 8, (2,))
    >>> s.end - s.start
    2
    """

    name: str
    start: int
    end: int
    shape: tuple[int, ...]
