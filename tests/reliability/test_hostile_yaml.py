"""Hostile and clumsy config and grid files: one line, exit 2, never a traceback, nothing written.

Promises (LIMITS.md, "Bad configs"): YAML is read with limits on size, UTF-8,
nesting depth and alias expansion (:mod:`fedpoison.yaml_safe`); every float is
finite and at most 1e9 in magnitude; partition parameters that degenerate are
refused; a grid larger than ``MAX_RUNS`` is refused before any run is built;
``--out`` is checked writable before anything is computed. The fuzz suite
generates 64 files and ``--set`` values of these kinds.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from sentinel import tree_digest

from fedpoison.cli import main


def _bomb(rng: random.Random) -> str:
    depth, width = rng.randint(6, 9), rng.randint(6, 10)
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for i in range(1, depth):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _cycle(rng: random.Random) -> str:
    return rng.choice(["a: &a [*a]\n", "a: &a {b: *a}\n", "base: &b {clients: *b}\n",
                       "axes: &x {seed: [*x]}\n"])


def _deep(rng: random.Random) -> str:
    n = rng.choice([100, 1000, 20_000])
    return rng.choice(["a: " + "[" * n + "]" * n, "a: " + "{b: " * n + "1" + "}" * n]) + "\n"


def _bad_bytes(rng: random.Random) -> bytes:
    return rng.choice([b"\xff\xfe\x00\x01", b"seed: 1\nrounds: \xe9\n", b"\x00\x00\x00", bytes(range(256)),
                       "seed: 1\n".encode("utf-16")])


def _bad_numbers(rng: random.Random) -> str:
    key = rng.choice(["local.lr", "server.lr", "local.weight_decay", "dataset.test_fraction", "partition.alpha",
                      "clients.fraction", "local.clip_norm"])
    value = rng.choice([".inf", "-.inf", ".nan", "1e308", "1e39", "-1e300", "1e10"])
    section, field = key.split(".")
    return f"{section}:\n  {field}: {value}\n"


def _bad_partition(rng: random.Random) -> str:
    key, value = rng.choice([("alpha", "1e-9"), ("alpha", "1e300"), ("sigma", "1e5"), ("power", "1e-6"),
                             ("alpha", "0.0000001")])
    name = {"alpha": "dirichlet", "sigma": "quantity_skew", "power": "quantity_skew"}[key]
    extra = "\n  distribution: powerlaw" if key == "power" else ""
    return f"partition:\n  name: {name}\n  {key}: {value}{extra}\n"


def _tags(rng: random.Random) -> str:
    return rng.choice(["seed: !!python/object/apply:os.system ['echo pwned']\n", "a: !!binary AAAA\nseed: 1\n",
                       "seed: !custom 3\n", "--- 1\n--- 2\n", "seed: [1, 2\n", "\tseed: 1\n", "? [a, b]\n: 1\n"])


def _huge(rng: random.Random) -> str:
    return "seed: 1\n# " + "x" * (1 << 20) + "\n"


KINDS = [_bomb, _cycle, _deep, _bad_bytes, _bad_numbers, _bad_partition, _tags, _huge]


@pytest.mark.parametrize("case", range(64))
def test_hostile_yaml_fuzz(case: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(case)
    kind = KINDS[case % len(KINDS)]
    body = kind(rng)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    f = work / "c.yaml"
    as_grid = case % 2 == 1 and kind not in (_bad_numbers, _bad_partition)
    if as_grid and isinstance(body, str):
        body = "name: g\nbase:\n  rounds: 1\n" + body if kind is not _bomb else body + "axes: {seed: *l1}\n"
    f.write_bytes(body if isinstance(body, bytes) else body.encode())
    before = tree_digest(work)
    start = time.perf_counter()
    argv = ["grid", str(f), "--dry-run"] if as_grid else ["config", str(f)]
    code = main(argv)  # an exception here is a traceback for the user
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 2, (kind.__name__, out[-300:], err)
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 1000, err[:2000]
    assert elapsed < 10, f"{kind.__name__} took {elapsed:.1f}s"
    assert tree_digest(work) == before, "a rejected config wrote something"


@pytest.mark.parametrize("value", [".inf", ".nan", "1e308", "[" * 500 + "]" * 500, "&a [*a]", "\x1b"])
def test_hostile_set_values(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["config", "--set", f"local.lr={value}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ("local.lr" in err or "--set" in err), err


def test_model_that_does_not_fit_the_dataset_is_refused_before_training(capsys: pytest.CaptureFixture[str],
                                                                        tmp_path: Path) -> None:
    start = time.perf_counter()
    code = main(["run", "--quiet", "--set", "model.name=cnn28", "--set", "rounds=50", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "model.name=cnn28 on dataset.name=digits" in err and "(1, 8, 8)" in err
    assert time.perf_counter() - start < 20 and not (tmp_path / "o" / "history.csv").exists()


@pytest.mark.parametrize("out", ["/proc/fedpoison-out", "FILE/sub", "FILE"])
def test_unwritable_out_is_refused_before_the_run(out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "FILE").write_text("a file\n")
    target = out.replace("FILE", str(tmp_path / "FILE"))
    start = time.perf_counter()
    assert main(["run", "--quiet", "--set", "rounds=200", "--out", target]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and err.count("\n") == 1
    assert time.perf_counter() - start < 20, "the run was computed before --out was checked"
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nbase: {rounds: 200}\n")
    assert main(["grid", str(grid), "--out", target, "--workers", "0", "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_grid_past_the_size_limit_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "g.yaml"
    axes = "\n".join(f"  {k}: [{', '.join(str(i) for i in range(1, 11))}]"
                     for k in ["seed", "rounds", "local.epochs", "local.batch_size", "eval.every", "eval.batch_size"])
    grid.write_text(f"name: big\naxes:\n{axes}\n")
    start = time.perf_counter()
    assert main(["grid", str(grid), "--dry-run"]) == 2
    assert "1000000 runs, more than the limit" in capsys.readouterr().err
    assert time.perf_counter() - start < 5


def test_a_config_asking_for_more_memory_than_exists_is_one_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--quiet", "--set", "dataset.name=synthetic", "--set", "dataset.dims=1000000000000",
                 "--set", "rounds=1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: out of memory") and err.count("\n") == 1, err
