"""Datasets read from files on disk: Fashion-MNIST, MNIST (IDX) and CIFAR-10 (binary).

Each loader reads the split that its dataset defines (train / test) from a
folder, ``dataset.path`` or the dataset's default folder, and returns float32
images of shape ``(N, C, H, W)`` scaled to ``[0, 1]`` with int64 labels.

Formats
-------
IDX (MNIST, Fashion-MNIST)
    A big-endian header: a 4-byte magic number ``0x0000TTDD`` (``TT`` the
    element type, ``0x08`` for unsigned bytes, ``DD`` the number of
    dimensions), one 4-byte size per dimension, then the payload in C order.
    Images are ``0x00000803`` (count, rows, columns), labels ``0x00000801``.
    The files may be gzip-compressed (``.gz``) or not.
CIFAR-10 binary version
    Six files ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training) and
    ``test_batch.bin``, each a run of 3,073-byte records: one label byte, then
    1,024 red, 1,024 green and 1,024 blue bytes of a 32x32 image in row order.
    The python version of CIFAR-10 is a set of pickles; it is never read, as
    unpickling a file runs arbitrary code.

Every missing or corrupt file raises :class:`~fedpoison.errors.DataError`
naming the path, what was expected, what was found, and how to get the data.

References
----------
.. [1] H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset
   for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.
.. [2] Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-Based Learning
   Applied to Document Recognition", Proceedings of the IEEE 86(11), 1998.
.. [3] A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
   Technical report, University of Toronto, 2009.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from fedpoison.data.base import DATASETS, Dataset
from fedpoison.data.gunzip import GunzipError, gunzip_bounded
from fedpoison.errors import DataError

__all__ = [
    "CIFAR10_RECORD_BYTES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "load_cifar10",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "parse_idx",
    "read_bytes",
    "read_cifar10_batch",
    "read_idx",
]

#: Magic number of an IDX file of unsigned-byte images (count, rows, columns).
IDX_IMAGES_MAGIC = 0x00000803
#: Magic number of an IDX file of unsigned-byte labels (count).
IDX_LABELS_MAGIC = 0x00000801

#: IDX element type code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_CIFAR10_SIDE = 32
_CIFAR10_CHANNELS = 3
#: One CIFAR-10 binary record: a label byte and a 3x32x32 image.
CIFAR10_RECORD_BYTES = 1 + _CIFAR10_CHANNELS * _CIFAR10_SIDE * _CIFAR10_SIDE
_CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR10_TEST = "test_batch.bin"
_CIFAR10_SUBFOLDER = "cifar-10-batches-bin"

_NUM_CLASSES = 10

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_FASHION_HINT = (
    "to get Fashion-MNIST, run `apt-get install dataset-fashion-mnist` (it installs the files in "
    "/usr/share/datasets/fashion-mnist), or download the four IDX files "
    f"({', '.join(f + '.gz' for f in _IDX_FILES)}) from the Fashion-MNIST project "
    "(Xiao et al. 2017) and set dataset.path to their folder"
)
_MNIST_HINT = (
    "to get MNIST, download the four IDX files "
    f"({', '.join(f + '.gz' for f in _IDX_FILES)}) from http://yann.lecun.com/exdb/mnist/ "
    "or a mirror of it, and set dataset.path to their folder"
)
_CIFAR10_HINT = (
    "to get CIFAR-10, download the binary version (cifar-10-binary.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and set dataset.path to the folder "
    f"that holds {_CIFAR10_SUBFOLDER}/ or the .bin files themselves; the python (pickle) version "
    "is never read"
)


def _error(path: Path, expected: str, found: str, hint: str = "") -> DataError:
    """Build a :class:`DataError` naming ``path``, the expectation, the finding and the hint."""
    message = f"{path}: expected {expected}, found {found}"
    return DataError(f"{message}; {hint}" if hint else message)


def _exc_name(exc: BaseException) -> str:
    """``EOFError``, ``zlib.error``, ``gzip.BadGzipFile``: the exception's type as one would import it."""
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


def read_bytes(path: str | Path, *, hint: str = "",
               declared: Callable[[bytes], int | None] | None = None) -> bytes:
    """Read a file whole, decompressing it when its name ends in ``.gz``.

    Parameters
    ----------
    path:
        The file to read.
    hint:
        How to get the data; appended to the message of any error.
    declared:
        For a ``.gz`` file: the size its content declares, read from the first
        decompressed bytes (``None`` when unknown). Decompression stops past it
        (and past the gzip trailer's size), before any more memory is used.

    Returns
    -------
    bytes
        The file's (decompressed) content.

    Raises
    ------
    DataError
        The file is missing or unreadable, or is not a complete, valid gzip stream.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _error(path, "a file", "none", hint) from None
    except OSError as exc:
        raise _error(path, "a readable file", f"{type(exc).__name__}: {exc.strerror or exc}", hint) from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gunzip_bounded(raw, declared)
    except GunzipError as exc:
        raise _error(path, "a complete gzip file within its declared size", str(exc), hint) from None


def parse_idx(data: bytes, path: str | Path = "<bytes>", *, hint: str = "") -> np.ndarray:
    """Parse the content of an IDX file.

    Parameters
    ----------
    data:
        The whole (decompressed) file.
    path:
        Where ``data`` came from; named in errors.
    hint:
        How to get the data; appended to the message of any error.

    Returns
    -------
    numpy.ndarray
        A read-only array (a view of ``data``) of the shape and element type
        given by the header, in native byte order for single-byte types.

    Raises
    ------
    DataError
        Unknown magic number, or a payload whose size does not match the header.
    """
    path = Path(path)
    if len(data) < 4:
        raise _error(path, "an IDX file of at least 4 bytes", f"{len(data)} bytes", hint)
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_DTYPES:
        raise _error(path, "an IDX magic number 0x00000TDD (T a type code, D the dimensions)",
                     f"0x{magic:08X}", hint)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _error(path, f"an IDX header of {header} bytes ({ndim} dimensions)",
                     f"a file of {len(data)} bytes", hint)
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    payload = math.prod(shape) * dtype.itemsize  # Python integers: dimensions that overflow int64 stay exact
    if len(data) - header != payload:
        raise _error(path, f"{payload} payload bytes for dimensions {shape}",
                     f"{len(data) - header} bytes", hint)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def idx_declared_size(prefix: bytes) -> int | None:
    """The total size an IDX header declares (header plus payload), or ``None`` if ``prefix`` holds none."""
    if len(prefix) < 4:
        return None
    magic = int.from_bytes(prefix[:4], "big")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    header = 4 + 4 * ndim
    if magic >> 16 or type_code not in _IDX_DTYPES or len(prefix) < header:
        return None
    dims = [int.from_bytes(prefix[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return header + math.prod(dims) * _IDX_DTYPES[type_code].itemsize


def read_idx(path: str | Path, *, magic: int | None = None, hint: str = "") -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or not.

    Parameters
    ----------
    path:
        The file to read.
    magic:
        The magic number required, e.g. :data:`IDX_IMAGES_MAGIC`; ``None``
        accepts any valid IDX type.
    hint:
        How to get the data; appended to the message of any error.

    Returns
    -------
    numpy.ndarray
        A read-only array of the shape and type given by the header.

    Raises
    ------
    DataError
        The file is missing, not valid gzip, has the wrong magic number, or its
        payload size does not match its header.
    """
    path = Path(path)
    def declared(prefix: bytes) -> int | None:  # a wrong magic number gets its own message below
        return idx_declared_size(prefix) if magic is None or prefix[:4] == magic.to_bytes(4, "big") else None

    data = read_bytes(path, hint=hint, declared=declared)
    if magic is not None:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        if found != magic:
            shown = f"0x{found:08X}" if found is not None else f"a file of {len(data)} bytes"
            raise _error(path, f"IDX magic number 0x{magic:08X}", shown, hint)
    return parse_idx(data, path, hint=hint)


def read_cifar10_batch(path: str | Path, *, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file.

    Parameters
    ----------
    path:
        A ``*.bin`` file (``.gz`` if compressed) of 3,073-byte records.
    hint:
        How to get the data; appended to the message of any error.

    Returns
    -------
    images : numpy.ndarray
        uint8 array of shape ``(N, 3, 32, 32)`` (channels red, green, blue).
    labels : numpy.ndarray
        uint8 array of shape ``(N,)``.

    Raises
    ------
    DataError
        The file is missing, empty, or its size is not a multiple of 3,073 bytes.
    """
    path = Path(path)
    data = read_bytes(path, hint=hint)
    if not data or len(data) % CIFAR10_RECORD_BYTES:
        raise _error(path, f"a non-zero multiple of {CIFAR10_RECORD_BYTES} bytes (CIFAR-10 binary records)",
                     f"{len(data)} bytes", hint)
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    images = records[:, 1:].reshape(-1, _CIFAR10_CHANNELS, _CIFAR10_SIDE, _CIFAR10_SIDE)
    return images, records[:, 0]


def _to_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` -> float32 ``(N, C, H, W)`` in ``[0, 1]``."""
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    scaled = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255.0), out=scaled, dtype=np.float32)
    return torch.from_numpy(scaled)


def _to_labels(labels: np.ndarray, path: Path, hint: str) -> torch.Tensor:
    """uint8 labels -> int64 tensor, checking they lie in ``[0, 10)``."""
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise _error(path, f"labels in [0, {_NUM_CLASSES})", f"label {int(labels.max())}", hint)
    return torch.from_numpy(labels.astype(np.int64))


class FolderParams(BaseModel):
    """Params of a dataset read from a folder of files."""

    model_config = ConfigDict(extra="forbid")

    #: Folder of the dataset's files; each dataset has its own default.
    path: str | None = None


def _folder(params: FolderParams, name: str, default: Path, expected: str, hint: str) -> Path:
    """The dataset folder: ``params.path`` or ``default``, which must be an existing folder."""
    folder = Path(params.path).expanduser() if params.path else default
    if not folder.is_dir():
        what = "a file" if folder.exists() else "no such folder"
        source = "dataset.path" if params.path else f"the default folder of dataset '{name}'"
        raise _error(folder, f"a folder ({source}) holding {expected}", what, hint)
    return folder


def _find_idx(folder: Path, stem: str, hint: str) -> Path:
    """The file for ``stem`` in ``folder``: ``stem``, ``stem.gz`` or the ``.idx`` spelling."""
    dotted = stem.replace("-idx", ".idx")
    candidates = [folder / name for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise _error(folder / f"{stem}.gz", f"one of {', '.join(c.name for c in candidates)} in {folder}",
                 "none of them", hint)


def _load_idx_split(folder: Path, images_stem: str, labels_stem: str,
                    hint: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """Read one split's images and labels from ``folder`` and check they agree."""
    images_path = _find_idx(folder, images_stem, hint)
    labels_path = _find_idx(folder, labels_stem, hint)
    images = read_idx(images_path, magic=IDX_IMAGES_MAGIC, hint=hint)
    labels = read_idx(labels_path, magic=IDX_LABELS_MAGIC, hint=hint)
    if images.shape[0] == 0 or 0 in images.shape[1:]:
        raise _error(images_path, "at least one image of at least 1x1 pixels", f"images of shape {images.shape}",
                     hint)
    if images.shape[0] != labels.shape[0]:
        raise _error(labels_path, f"{images.shape[0]} labels, one per image of {images_path}",
                     f"{labels.shape[0]} labels", hint)
    return images, labels, labels_path


def load_idx_dataset(name: str, folder: Path, hint: str) -> Dataset:
    """Load an MNIST-style dataset: the four IDX files in ``folder``.

    Parameters
    ----------
    name:
        Registry name given to the :class:`Dataset`.
    folder:
        Folder holding the four files (``.gz`` or not).
    hint:
        How to get the data; appended to the message of any error.

    Returns
    -------
    Dataset
        Images ``(N, 1, H, W)`` in ``[0, 1]`` and int64 labels, 10 classes.
    """
    x_tr, y_tr, y_tr_path = _load_idx_split(folder, _IDX_FILES[0], _IDX_FILES[1], hint)
    x_te, y_te, y_te_path = _load_idx_split(folder, _IDX_FILES[2], _IDX_FILES[3], hint)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise _error(folder, f"test images of the training size {x_tr.shape[1:]}",
                     f"{x_te.shape[1:]}", hint)
    return Dataset(name, _to_images(x_tr), _to_labels(y_tr, y_tr_path, hint),
                   _to_images(x_te), _to_labels(y_te, y_te_path, hint), _NUM_CLASSES)


@dataclass(frozen=True)
class _IdxSource:
    """Where an IDX dataset lives by default and how to get it."""

    default: Path
    hint: str


_IDX_SOURCES = {
    "fashion-mnist": _IdxSource(Path("/usr/share/datasets/fashion-mnist"), _FASHION_HINT),
    "mnist": _IdxSource(Path("/usr/share/datasets/mnist"), _MNIST_HINT),
}


def _load_idx_registered(name: str, params: FolderParams) -> Dataset:
    source = _IDX_SOURCES[name]
    folder = _folder(params, name, source.default, "the four IDX files", source.hint)
    return load_idx_dataset(name, folder, source.hint)


@DATASETS.register(
    "fashion-mnist",
    description="Fashion-MNIST: 60,000 + 10,000 28x28 grey clothing images, 10 classes; IDX files from "
    "dataset.path (default /usr/share/datasets/fashion-mnist, apt-get install dataset-fashion-mnist).",
    reference="Xiao, Rasul & Vollgraf 2017, Fashion-MNIST (arXiv:1708.07747); the standard train/test split.",
    input_shape="1x28x28",
    params=FolderParams,
    default_model="cnn28",
)
def load_fashion_mnist(params: FolderParams, seed: int = 0) -> Dataset:
    """Load Fashion-MNIST from ``params.path`` or ``/usr/share/datasets/fashion-mnist``.

    The split is the dataset's own (60,000 training, 10,000 test images), so
    ``seed`` is unused.
    """
    return _load_idx_registered("fashion-mnist", params)


@DATASETS.register(
    "mnist",
    description="MNIST: 60,000 + 10,000 28x28 grey handwritten digits, 10 classes; IDX files from "
    "dataset.path (default /usr/share/datasets/mnist).",
    reference="LeCun, Bottou, Bengio & Haffner 1998, Gradient-Based Learning Applied to Document "
    "Recognition; the standard train/test split.",
    input_shape="1x28x28",
    params=FolderParams,
    default_model="cnn28",
)
def load_mnist(params: FolderParams, seed: int = 0) -> Dataset:
    """Load MNIST from ``params.path`` or ``/usr/share/datasets/mnist``.

    The split is the dataset's own (60,000 training, 10,000 test images), so
    ``seed`` is unused.
    """
    return _load_idx_registered("mnist", params)


_CIFAR10_DEFAULT = Path("/usr/share/datasets/cifar10")


def _cifar10_folder(params: FolderParams) -> Path:
    """The folder holding the CIFAR-10 ``.bin`` files, looking into ``cifar-10-batches-bin/`` too."""
    expected = f"the CIFAR-10 binary files ({', '.join(_CIFAR10_TRAIN)}, {_CIFAR10_TEST})"
    folder = _folder(params, "cifar10", _CIFAR10_DEFAULT, expected, _CIFAR10_HINT)
    for candidate in (folder, folder / _CIFAR10_SUBFOLDER):
        if any((candidate / f"{_CIFAR10_TEST}{ext}").is_file() for ext in ("", ".gz")):
            return candidate
    if (folder / "cifar-10-batches-py").exists() or (folder / "data_batch_1").exists():
        raise _error(folder, expected, "the python (pickle) version of CIFAR-10, which fedpoison never "
                     "loads since unpickling runs arbitrary code", _CIFAR10_HINT)
    sub = folder / _CIFAR10_SUBFOLDER
    return sub if sub.is_dir() else folder


def _cifar10_file(folder: Path, name: str) -> Path:
    """``folder/name``, or its ``.gz`` form when only that exists."""
    path = folder / name
    compressed = folder / f"{name}.gz"
    return compressed if not path.is_file() and compressed.is_file() else path


@DATASETS.register(
    "cifar10",
    description="CIFAR-10: 50,000 + 10,000 32x32 colour images, 10 classes; binary version from "
    "dataset.path (default /usr/share/datasets/cifar10), never the pickled one.",
    reference="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images; the standard "
    "train/test split.",
    input_shape="3x32x32",
    params=FolderParams,
    default_model="resnet8",
)
def load_cifar10(params: FolderParams, seed: int = 0) -> Dataset:
    """Load CIFAR-10 (binary version) from ``params.path`` or ``/usr/share/datasets/cifar10``.

    The training set is ``data_batch_1.bin`` ... ``data_batch_5.bin`` in order,
    the test set ``test_batch.bin``; ``seed`` is unused.
    """
    folder = _cifar10_folder(params)
    splits = []
    for names in (_CIFAR10_TRAIN, (_CIFAR10_TEST,)):
        images, labels = [], []
        for name in names:
            path = _cifar10_file(folder, name)
            x, y = read_cifar10_batch(path, hint=_CIFAR10_HINT)
            images.append(x)
            labels.append(_to_labels(y, path, _CIFAR10_HINT))
        splits.append((_to_images(np.concatenate(images)), torch.cat(labels)))
    (x_tr, y_tr), (x_te, y_te) = splits
    return Dataset("cifar10", x_tr, y_tr, x_te, y_te, _NUM_CLASSES)
