"""Between Flower's ``ArrayRecord`` and fedpoison's flat float32 vectors.

A model travels in Flower as an ``ArrayRecord``: named arrays, each serialized
with its dtype and shape. fedpoison's defenses speak the update matrix, one
float32 row per client. :class:`ArrayLayout`, read from the global model the
server sends, fixes the order, names, shapes and dtypes once per round; every
reply is then checked against it and flattened into one row.

Only floating-point arrays are part of the vector. Other arrays (integer
buffers such as BatchNorm's ``num_batches_tracked``) are not aggregated: the
server keeps its own copy of them, and replies must still carry them with the
same dtype and shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import Tensor

from fedpoison.core.slices import ParamSlice
from fedpoison.errors import UpdateError

#: What a train reply carries: the trained parameters (Flower's convention) or the update (new minus old).
ReplyKind = Literal["params", "update"]


@dataclass(frozen=True)
class ArrayLayout:
    """Names, shapes and dtypes of an ``ArrayRecord``, and where its float arrays sit in a flat vector.

    Example
    -------
    >>> rec = ArrayRecord({"w": Array(np.ones((2, 2), np.float32)), "b": Array(np.zeros(2, np.float32))})
    >>> layout = ArrayLayout.of(rec)
    >>> layout.dim
    6
    >>> layout.flatten(rec).tolist()
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    #: One slice per floating-point array, in record order.
    slices: tuple[ParamSlice, ...]

    @classmethod
    def of(cls, record: ArrayRecord) -> ArrayLayout:
        """Read the layout of ``record`` (the global model); its arrays must decode."""
        keys, shapes, dtypes, slices, start = [], [], [], [], 0
        for key, arr in _decode_all(record, who="the global model").items():
            keys.append(key)
            shapes.append(tuple(arr.shape))
            dtypes.append(str(arr.dtype))
            if np.issubdtype(arr.dtype, np.floating):
                slices.append(ParamSlice(key, start, start + arr.size, tuple(arr.shape)))
                start += arr.size
        return cls(tuple(keys), tuple(shapes), tuple(dtypes), tuple(slices))

    @property
    def dim(self) -> int:
        """Length of the flat vector (float arrays only)."""
        return self.slices[-1].end if self.slices else 0

    def describe(self, key: str) -> str:
        """``float32 (64, 10)`` for the array ``key``."""
        i = self.keys.index(key)
        return f"{self.dtypes[i]} {self.shapes[i]}"

    def check(self, record: ArrayRecord, *, who: str = "reply") -> dict[str, np.ndarray]:
        """Decode ``record`` and check it has this layout; raise :class:`UpdateError` naming ``who``.

        The check reads the decoded arrays, not the dtype and shape that the
        sender declared, so a record cannot lie about its contents.
        """
        arrays = _decode_all(record, who=who)
        if tuple(arrays) != self.keys:
            missing = [k for k in self.keys if k not in arrays]
            extra = [k for k in arrays if k not in self.keys]
            detail = []
            if missing:
                detail.append(f"missing {missing}")
            if extra:
                detail.append(f"unexpected {extra}")
            if not detail:
                detail.append(f"keys in order {list(arrays)}")
            raise UpdateError(
                f"{who}: expected arrays {list(self.keys)} in that order, got {', '.join(detail)}"
            )
        for key, shape, dtype in zip(self.keys, self.shapes, self.dtypes, strict=True):
            arr = arrays[key]
            if str(arr.dtype) != dtype or tuple(arr.shape) != shape:
                raise UpdateError(
                    f"{who}: array '{key}': expected {dtype} {shape}, got {arr.dtype} {tuple(arr.shape)}"
                )
        return arrays

    def flatten(self, record: ArrayRecord, *, who: str = "reply") -> Tensor:
        """The ``(dim,)`` float32 vector of ``record``'s float arrays, after :meth:`check`."""
        arrays = self.check(record, who=who)
        return self.flatten_arrays(arrays)

    def flatten_arrays(self, arrays: dict[str, np.ndarray]) -> Tensor:
        """The ``(dim,)`` float32 vector of already checked, decoded arrays."""
        if not self.slices:
            return torch.zeros(0)
        parts = [np.asarray(arrays[s.name], dtype=np.float32).reshape(-1) for s in self.slices]
        return torch.from_numpy(np.concatenate(parts))

    def unflatten(self, flat: Tensor, template: ArrayRecord) -> ArrayRecord:
        """A new ``ArrayRecord``: float arrays from ``flat`` (cast back to their dtype), others from ``template``."""
        if tuple(flat.shape) != (self.dim,):
            raise UpdateError(f"expected a flat vector of shape ({self.dim},), got {tuple(flat.shape)}")
        values = flat.detach().cpu().numpy()
        by_name = {s.name: s for s in self.slices}
        out = ArrayRecord()
        for key, shape, dtype in zip(self.keys, self.shapes, self.dtypes, strict=True):
            s = by_name.get(key)
            if s is None:
                out[key] = Array(np.array(template[key].numpy(), copy=True))
            else:
                out[key] = Array(np.ascontiguousarray(values[s.start : s.end].reshape(shape).astype(dtype)))
        return out


def _decode_all(record: ArrayRecord, *, who: str) -> dict[str, np.ndarray]:
    """Every array of ``record`` decoded to numpy; undecodable data raises :class:`UpdateError`."""
    if not isinstance(record, ArrayRecord):
        raise UpdateError(f"{who}: expected an ArrayRecord, got {type(record).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, arr in record.items():
        try:
            out[key] = arr.numpy()
        except Exception as exc:  # a corrupt or foreign payload: whatever numpy raises
            raise UpdateError(
                f"{who}: array '{key}' cannot be decoded as a numpy array ({type(exc).__name__}: {exc})"
            ) from None
    return out
