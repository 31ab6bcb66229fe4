"""File-backed dataset loaders: IDX (Fashion-MNIST, MNIST) and CIFAR-10 binary.

Every test but the last writes its own small files in ``tmp_path``; the last
one reads the real Fashion-MNIST when the Debian package is installed.
"""

from __future__ import annotations

import gzip
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fedpoison.config import DatasetSection
from fedpoison.data import DATASETS, load_dataset
from fedpoison.data import files as data_files
from fedpoison.errors import DataError

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as an IDX file (header from its shape unless ``magic`` is given)."""
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_set(folder: Path, *, compress: bool = True, n_train: int = 20, n_test: int = 10,
                 seed: int = 0, names: dict[str, str] = IDX_NAMES) -> dict[str, np.ndarray]:
    """Write four random IDX files into ``folder`` and return their arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{names[key]}.gz").write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (folder / names[key]).write_bytes(data)
    return arrays


def cfg(name: str, path: Path) -> DatasetSection:
    return DatasetSection(name=name, path=str(path))


def assert_matches(ds, arrays: dict[str, np.ndarray], channels: int = 1) -> None:
    """``ds`` holds exactly ``arrays``: images as float32 / 255 in (N, C, H, W), labels as int64."""
    for key in ("x_train", "x_test"):
        x = getattr(ds, key)
        expected = arrays[key].astype(np.float32) / np.float32(255.0)
        if expected.ndim == 3:
            expected = expected[:, None]
        assert x.dtype == torch.float32
        assert x.shape == (len(arrays[key]), channels, *arrays[key].shape[-2:])
        np.testing.assert_array_equal(x.numpy(), expected)
    for key in ("y_train", "y_test"):
        y = getattr(ds, key)
        assert y.dtype == torch.int64
        np.testing.assert_array_equal(y.numpy(), arrays[key].astype(np.int64))
    assert ds.num_classes == 10


def assert_data_error(config: DatasetSection, path: Path, *patterns: str) -> str:
    """Loading ``config`` raises DataError naming ``path`` and matching every pattern."""
    with pytest.raises(DataError) as info:
        load_dataset(config)
    message = str(info.value)
    assert str(path) in message, message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    return message


# --- IDX ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_gz_round_trip(tmp_path: Path, name: str) -> None:
    arrays = make_idx_set(tmp_path)
    ds = load_dataset(cfg(name, tmp_path))
    assert ds.name == name
    assert ds.input_shape == (1, 28, 28)
    assert_matches(ds, arrays)


def test_idx_uncompressed_round_trip(tmp_path: Path) -> None:
    arrays = make_idx_set(tmp_path, compress=False, seed=1)
    assert_matches(load_dataset(cfg("fashion-mnist", tmp_path)), arrays)


def test_idx_dotted_file_names(tmp_path: Path) -> None:
    """Some copies of MNIST name the files ``train-images.idx3-ubyte``."""
    dotted = {k: v.replace("-idx", ".idx") for k, v in IDX_NAMES.items()}
    arrays = make_idx_set(tmp_path, compress=False, seed=2, names=dotted)
    assert_matches(load_dataset(cfg("mnist", tmp_path)), arrays)


def test_read_idx_returns_header_shape(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    out = data_files.read_idx(path, magic=data_files.IDX_IMAGES_MAGIC)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_missing_file(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    (tmp_path / f"{IDX_NAMES['y_test']}.gz").unlink()
    assert_data_error(cfg("fashion-mnist", tmp_path), tmp_path / f"{IDX_NAMES['y_test']}.gz",
                      "none", "apt-get install dataset-fashion-mnist")


def test_wrong_magic(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / f"{IDX_NAMES['x_train']}.gz"
    labels_like = np.zeros((20, 28, 28), dtype=np.uint8)
    path.write_bytes(gzip.compress(idx_bytes(labels_like, magic=0x00000801)))
    assert_data_error(cfg("fashion-mnist", tmp_path), path, "0x00000803", "0x00000801")


def test_truncated_gzip(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / f"{IDX_NAMES['x_test']}.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_data_error(cfg("fashion-mnist", tmp_path), path, "gzip", "truncated")


def test_not_gzip(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / f"{IDX_NAMES['y_train']}.gz"
    path.write_bytes(b"this is not gzip data at all")
    assert_data_error(cfg("fashion-mnist", tmp_path), path, "gzip")


def test_corrupt_deflate_stream(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / f"{IDX_NAMES['x_train']}.gz"
    data = bytearray(path.read_bytes())
    data[10:40] = b"\xff" * 30  # the deflate stream starts after the 10-byte gzip header
    path.write_bytes(bytes(data))
    assert_data_error(cfg("fashion-mnist", tmp_path), path, "gzip")


@pytest.mark.parametrize("delta", [-7, 5])
def test_payload_size_mismatch(tmp_path: Path, delta: int) -> None:
    make_idx_set(tmp_path, compress=False)
    path = tmp_path / IDX_NAMES["x_train"]
    data = path.read_bytes()
    path.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    assert_data_error(cfg("fashion-mnist", tmp_path), path, "15680 payload bytes", str(15680 + delta))


def test_count_mismatch(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / f"{IDX_NAMES['y_train']}.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(19, dtype=np.uint8))))
    assert_data_error(cfg("fashion-mnist", tmp_path), path, "20 labels", "19 labels")


def test_label_out_of_range(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / f"{IDX_NAMES['y_test']}.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.full(10, 12, dtype=np.uint8))))
    assert_data_error(cfg("mnist", tmp_path), path, r"\[0, 10\)", "label 12")


def test_missing_folder_says_how_to_get_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_data_error(cfg("mnist", missing), missing, "no such folder", "download", "dataset.path")
    assert_data_error(cfg("fashion-mnist", missing), missing, "apt-get install dataset-fashion-mnist")


def test_default_mnist_folder_error(tmp_path: Path) -> None:
    default = Path("/usr/share/datasets/mnist")
    if default.exists():
        pytest.skip(f"{default} exists")
    assert_data_error(DatasetSection(name="mnist"), default, "default folder", "download", "dataset.path")


# --- CIFAR-10 ----------------------------------------------------------------------------------------------


def make_cifar(folder: Path, *, per_batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Write six small CIFAR-10 binary batch files and return the arrays they hold."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        x = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch, dtype=np.uint8)
        records = np.concatenate([y[:, None], x.reshape(per_batch, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        xs.append(x)
        ys.append(y)
    return {
        "x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]),
        "x_test": xs[5], "y_test": ys[5],
    }


@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar10_round_trip(tmp_path: Path, subfolder: bool) -> None:
    arrays = make_cifar(tmp_path / "cifar-10-batches-bin" if subfolder else tmp_path)
    ds = load_dataset(cfg("cifar10", tmp_path))
    assert ds.name == "cifar10"
    assert ds.input_shape == (3, 32, 32)
    assert len(ds.y_train) == 15 and len(ds.y_test) == 3
    assert_matches(ds, arrays, channels=3)


def test_cifar10_channel_layout(tmp_path: Path) -> None:
    """Byte 1 + c * 1024 + r * 32 + col of a record is channel c, row r, column col."""
    make_cifar(tmp_path)
    record = np.zeros(3073, dtype=np.uint8)
    record[0] = 7
    record[1 + 1 * 1024 + 2 * 32 + 5] = 255  # green, row 2, column 5
    (tmp_path / "test_batch.bin").write_bytes(record.tobytes())
    ds = load_dataset(cfg("cifar10", tmp_path))
    assert ds.y_test.tolist() == [7]
    assert ds.x_test[0, 1, 2, 5] == 1.0 and ds.x_test.sum() == 1.0


def test_cifar10_size_not_multiple(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    assert_data_error(cfg("cifar10", tmp_path), path, "multiple of 3073", str(3 * 3073 - 100))


def test_cifar10_missing_batch(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    (tmp_path / "data_batch_5.bin").unlink()
    assert_data_error(cfg("cifar10", tmp_path), tmp_path / "data_batch_5.bin", "binary version")


def test_cifar10_python_version_is_refused(tmp_path: Path) -> None:
    """A folder with only the pickled version gives an error, and nothing is unpickled."""
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04not read")
    assert_data_error(cfg("cifar10", tmp_path), tmp_path, "pickle", "binary version")


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_data_error(cfg("cifar10", missing), missing, "no such folder", "cifar-10-binary", "dataset.path")


def test_module_never_uses_pickle() -> None:
    source = inspect.getsource(data_files)
    assert not re.search(r"^\s*(import|from)\s+c?pickle\b", source, re.M)
    assert "pickle.load" not in source and "np.load" not in source and "torch.load" not in source


def test_registered_with_shapes() -> None:
    shapes = {"fashion-mnist": "1x28x28", "mnist": "1x28x28", "cifar10": "3x32x32"}
    for name, shape in shapes.items():
        entry = DATASETS.get(name)
        assert entry.meta["input_shape"] == shape
        assert entry.reference


# --- the real data -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST not installed (apt-get install "
                    "dataset-fashion-mnist)")
def test_real_fashion_mnist() -> None:
    ds = load_dataset(DatasetSection(name="fashion-mnist"))
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert 0.2 < float(ds.x_train.mean()) < 0.4
    assert sorted(ds.y_train.unique().tolist()) == list(range(10))
    assert ds.y_train.bincount().tolist() == [6000] * 10
    assert ds.y_test.bincount().tolist() == [1000] * 10
