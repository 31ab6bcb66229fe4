"""Hostile and damaged dataset files: one line, exit 2, bounded memory, never a traceback.

Promises (LIMITS.md, "Files"): IDX headers are checked against the file's real
size with exact integers before anything is allocated (dimensions that
overflow int64 included); gzip decompression stops past the size the file
declares (the gzip trailer, the IDX header, and 1 GiB), so a small file that
expands to gigabytes costs megabytes; empty splits and images of no pixels are
refused; images of a size the model does not take are refused before training.
The fuzz suite writes 60 damaged Fashion-MNIST-style folders.
"""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from sentinel import tree_digest

from fedpoison.cli import main
from fedpoison.data.gunzip import GunzipError, gunzip_bounded

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def _valid(rng: np.random.Generator) -> dict[str, bytes]:
    x_tr = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    x_te = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    return {
        NAMES[0]: _idx(0x803, [30, 28, 28], x_tr.tobytes()),
        NAMES[1]: _idx(0x801, [30], rng.integers(0, 10, 30, dtype=np.uint8).tobytes()),
        NAMES[2]: _idx(0x803, [10, 28, 28], x_te.tobytes()),
        NAMES[3]: _idx(0x801, [10], rng.integers(0, 10, 10, dtype=np.uint8).tobytes()),
    }


def _bomb(size: int, claimed: int | None = None) -> bytes:
    """A gzip member of ``size`` zero bytes (tiny compressed) whose trailer claims ``claimed`` bytes."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    body = b"".join(z.compress(chunk) for _ in range(size >> 20)) + z.flush()
    if claimed is not None:
        body = body[:-4] + (claimed % 2**32).to_bytes(4, "little")
    return body


def _damage(files: dict[str, bytes], rng: random.Random) -> tuple[dict[str, bytes], bool]:
    """Damage one file; returns the files (names may gain .gz) and whether each stays uncompressed."""
    target = rng.choice(NAMES)
    data = files[target]
    kind = rng.randrange(12)
    if kind == 0:  # dimensions that overflow int64 (and wrap to the real size in int64)
        files[target] = _idx(0x803, [2**32 - 1, 2**32 - 1, 2**32 - 1], b"\0" * 10)
    elif kind == 1:  # huge declared dimensions, tiny payload
        files[target] = _idx(0x803 if "images" in target else 0x801, [rng.choice([10**9, 2**31])] * (3 if "images" in target else 1), b"\1" * 64)
    elif kind == 2:  # empty split
        files[NAMES[2]] = _idx(0x803, [0, 28, 28], b"")
        files[NAMES[3]] = _idx(0x801, [0], b"")
    elif kind == 3:  # images of no pixels
        n = 30 if target.startswith("train") else 10
        files[NAMES[0] if target.startswith("train") else NAMES[2]] = _idx(0x803, [n, 0, 28], b"")
    elif kind == 4:  # cut short
        files[target] = data[: rng.randrange(len(data))]
    elif kind == 5:  # wrong magic or element type
        files[target] = rng.choice([b"\x00\x00\x0d\x03", b"\x12\x34\x56\x78", b"\x00\x00\x08\x00"]) + data[4:]
    elif kind == 6:  # labels out of range
        files[NAMES[1]] = _idx(0x801, [30], bytes([rng.choice([10, 200, 255])]) * 30)
    elif kind == 7:  # label count disagrees
        files[NAMES[3]] = _idx(0x801, [9], b"\1" * 9)
    elif kind == 8:  # images of another size than the model takes (refused before training)
        files[NAMES[0]] = _idx(0x803, [30, 5, 5], b"\7" * 750)
        files[NAMES[2]] = _idx(0x803, [10, 5, 5], b"\7" * 250)
    elif kind == 9:  # gzip bomb: 64 MiB of zeros, trailer claiming the truth or a lie
        files[target + ".gz"] = _bomb(64 << 20, claimed=rng.choice([None, 100, 2**32 - 1]))
        del files[target]
    elif kind == 10:  # a gzip stream cut short, or corrupt
        z = gzip.compress(data)
        files[target + ".gz"] = z[: rng.randrange(10, len(z))] if rng.random() < 0.5 else z[:20] + b"\xff" * 30 + z[50:]
        del files[target]
    else:  # random bytes
        files[target] = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    return files, kind == 8


@pytest.mark.parametrize("case", range(60))
def test_hostile_dataset_files_fuzz(case: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(case)
    files, model_mismatch = _damage(_valid(np.random.default_rng(case)), rng)
    folder = tmp_path / "data"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    before = tree_digest(folder)
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        code = main(["run", "--quiet", "--set", "dataset.name=fashion-mnist", "--set", f"dataset.path={folder}",
                     "--set", "rounds=1", "--set", "clients.num=3", "--set", "partition.min_samples=1",
                     "--out", str(out)])  # an exception here is a traceback for the user
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert peak < 200 << 20, f"peak {peak / 2**20:.0f} MiB while refusing damaged files"
    if model_mismatch:
        assert "does not take inputs of shape (1, 5, 5)" in err
    assert not (out / "history.csv").exists()
    assert tree_digest(folder) == before, "reading the dataset changed its files"


def test_a_gzip_bomb_stops_at_its_declared_size() -> None:
    bomb = _bomb(256 << 20, claimed=1000)
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(GunzipError, match="expands past its declared size of 1000 bytes"):
            gunzip_bounded(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_the_idx_header_bounds_decompression() -> None:
    data = _idx(0x801, [5], b"\1" * 5) + b"\0" * (32 << 20)  # the header declares 13 bytes, the stream holds 32 MiB
    with pytest.raises(GunzipError, match="declared size of 13 bytes"):
        gunzip_bounded(gzip.compress(data), lambda prefix: 13)
    assert gunzip_bounded(gzip.compress(data[:13]), lambda prefix: 13) == data[:13]
