"""Checkpoints under damage: every damaged checkpoint is refused with one line, never resumed.

Promises (LIMITS.md, "Checkpoints"): a checkpoint is validated in full against
the run that resumes (format, metadata types and ranges, config, round,
history, tensor names, shapes, dtypes and checksum, plug-in state, the audit
log's checksum); the audit log lives in its own append-only file; ``--resume``
with a config file or ``--set`` values that differ from the checkpoint is an
error. The fuzz suite damages one real mid-run checkpoint in 60 generated ways.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from sentinel import tree_digest

import fedpoison
from fedpoison.cli import main
from fedpoison.simulation.checkpoint import (
    AUDIT_LOG,
    CHECKPOINT,
    meta_sha256,
    run_with_checkpoints,
    tensors_sha256,
)

ARGS = ["rounds=4", "clients.num=6", "dataset.limit=240", "local.epochs=1", "attack.name=sign_flip",
        "attack.fraction=0.34", "defense.name=centered_clipping", "audit.name=norm_mad"]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a folder holding a checkpoint after round 2 of 4, the uninterrupted run's folder)."""
    cfg = fedpoison.load_config(overrides=ARGS)
    ref = tmp_path_factory.mktemp("ref")
    fedpoison.run(cfg).save(ref)
    ck = tmp_path_factory.mktemp("ck")

    def stop_after_2(record: dict) -> None:
        if record["round"] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_with_checkpoints(cfg, out=ck, every=1, progress=stop_after_2)
    assert (ck / CHECKPOINT).exists() and (ck / AUDIT_LOG).exists()
    return ck, ref


def _rewrite(folder: Path, edit: Callable[[dict[str, torch.Tensor], dict[str, str]], None], reseal: bool) -> None:
    """Edit a checkpoint; ``reseal`` recomputes its checksums, so that the checks behind them are reached."""
    f = folder / CHECKPOINT
    with safe_open(str(f), framework="pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(f))
    edit(tensors, meta)
    if reseal:
        if "tensors_sha256" in meta:
            meta["tensors_sha256"] = json.dumps(tensors_sha256(tensors))
        meta["meta_sha256"] = meta_sha256(meta)
    f.write_bytes(save(tensors, metadata=meta))


def _meta_edit(rng: random.Random, reseal: bool) -> Callable[[dict[str, torch.Tensor], dict[str, str]], None]:
    # a resealed config edit is a valid checkpoint of another config, so it is only tried unsealed
    key = rng.choice(["format", *([] if reseal else ["config"]), "round", "diverged_round", "history", "timings", "plugins",
                      "audit_rows", "audit_bytes", "audit_sha256", "tensors_sha256"])
    choice = rng.randrange(6)

    def edit(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        value = json.loads(meta[key]) if key != "format" else meta[key]
        if choice == 0:
            meta.pop(key)
        elif choice == 1:
            meta[key] = "{not json"
        elif choice == 2:
            meta[key] = json.dumps(rng.choice([[], {}, "x", 3.5, True, None, -1]))
            if meta[key] == json.dumps(value):
                meta[key] = json.dumps([["changed"]])
        elif choice == 3:
            meta[key] = "[" * 50_000 + "]" * 50_000
        elif key == "config":
            value[rng.choice(["seed", "rounds"])] += rng.choice([1, 7])
            meta[key] = json.dumps(value)
        elif key in ("round", "audit_rows", "audit_bytes"):
            meta[key] = json.dumps(value + rng.choice([-1, 1, 1000]))
        elif key in ("history", "timings"):
            meta[key] = json.dumps(value[:-1] if choice == 4 else value + value)
        elif key == "plugins":
            value["previous_malicious"] = {"999": {"__tensor__": "params"}}
            meta[key] = json.dumps(value)
        elif key == "diverged_round":
            meta[key] = json.dumps(0)
        else:
            meta[key] = json.dumps("0" * 64) if key != "format" else "1"

    return edit


def _tensor_edit(rng: random.Random, reseal: bool) -> Callable[[dict[str, torch.Tensor], dict[str, str]], None]:
    # a resealed change of values is a valid checkpoint of other values, so it is only tried unsealed
    choice = rng.choice([0, 1, 2, 3, 5] if reseal else range(6))

    def edit(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        name = rng.choice(sorted(tensors))
        t = tensors[name]
        if choice == 0:
            tensors.pop(name)
        elif choice == 1:
            tensors["extra"] = torch.zeros(3)
        elif choice == 2:
            tensors[name] = t.reshape(-1)[: max(t.numel() - 1, 0)].clone()
        elif choice == 3:
            tensors[name] = t.to(torch.float64) if t.is_floating_point() else t.to(torch.float32)
        elif choice == 4:
            flat = t.reshape(-1).clone()
            if flat.numel():
                flat[rng.randrange(flat.numel())] += 1
            else:
                flat = torch.ones(1)
            tensors[name] = flat.reshape(t.shape) if flat.numel() == t.numel() else flat
        else:
            tensors["params"] = torch.full_like(tensors["params"], float("nan"))

    return edit


def _damage(folder: Path, rng: random.Random, sentinel: Path) -> bool:
    """Damage the checkpoint in ``folder``; True when resuming must still succeed."""
    kind = rng.randrange(6)
    f = folder / CHECKPOINT
    log = folder / AUDIT_LOG
    if kind == 0:
        data = f.read_bytes()
        cut = rng.randrange(len(data))
        f.write_bytes(data[:cut] if rng.random() < 0.7 else data[:8] + b"\xff" * 8 + data[16:])
    elif kind in (1, 2):
        reseal = rng.random() < 0.6
        _rewrite(folder, (_meta_edit if kind == 1 else _tensor_edit)(rng, reseal), reseal)
    elif kind == 3:
        data = bytearray(log.read_bytes())
        op = rng.randrange(4)
        if op == 0:
            log.write_bytes(bytes(data[: rng.randrange(len(data))]))
        elif op == 1:
            data[rng.randrange(len(data))] ^= 0x20
            log.write_bytes(bytes(data))
        elif op == 2:
            log.unlink()
        else:
            log.unlink()
            log.symlink_to(sentinel / "notes.txt")
    elif kind == 4:  # rows a kill left past the checkpoint: benign, cut off when resuming
        with open(log, "ab") as fh:
            fh.write(b'{"round": 9, "client": 0}\n{"round": 9, "cli')
        return True
    else:
        target = rng.choice([sentinel / "notes.txt", sentinel / "missing"])
        f.unlink()
        f.symlink_to(target)
    return False


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    d = tmp_path / "sentinel"
    d.mkdir()
    (d / "notes.txt").write_text("precious\n")
    return d


@pytest.mark.parametrize("case", range(72))
def test_checkpoint_damage_fuzz(case: int, made: tuple[Path, Path], tmp_path: Path, sentinel: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    ck, ref = made
    run = tmp_path / "run"
    shutil.copytree(ck, run)
    ok = _damage(run, random.Random(case), sentinel)
    before = tree_digest(sentinel)
    code = main(["run", "--quiet", "--resume", str(run)])  # an exception here is a traceback for the user
    err = capsys.readouterr().err
    if ok:
        assert code == 0, err
    if code == 0:  # resumed: then it is the uninterrupted run, byte for byte
        for name in ("history.csv", "audit.csv"):
            assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    else:
        assert code == 2 and err.startswith("error: --resume") and err.count("\n") == 1, err
        assert not (run / "summary.json").exists()
    assert tree_digest(sentinel) == before


def test_undamaged_checkpoint_resumes_to_the_reference(made: tuple[Path, Path], tmp_path: Path) -> None:
    ck, ref = made
    run = tmp_path / "run"
    shutil.copytree(ck, run)
    assert main(["run", "--quiet", "--resume", str(run)]) == 0
    for name in ("history.csv", "audit.csv"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


def test_audit_log_is_outside_the_header_and_append_only(made: tuple[Path, Path]) -> None:
    ck, _ = made
    with safe_open(str(ck / CHECKPOINT), framework="pt") as fh:
        meta = fh.metadata()
    assert "clients" not in meta and int(meta["audit_rows"]) == len((ck / AUDIT_LOG).read_text().splitlines())
    assert int(meta["audit_bytes"]) == (ck / AUDIT_LOG).stat().st_size


def test_many_clients_long_run_checkpoints(tmp_path: Path) -> None:
    """The audit log grows with rounds x clients; the header does not (it held the log before)."""
    cfg = fedpoison.load_config(overrides=["rounds=10", "clients.num=130", "local.epochs=1", "eval.every=10"])
    run_with_checkpoints(cfg, out=tmp_path, every=1)
    with safe_open(str(tmp_path / CHECKPOINT), framework="pt") as fh:
        header = sum(len(v) for v in fh.metadata().values())
    assert len((tmp_path / AUDIT_LOG).read_text().splitlines()) == 1300
    assert header < 20_000


@pytest.mark.parametrize("extra", [["--set", "seed=1"], ["--set", "rounds=5"], "config"])
def test_resume_with_a_differing_config_is_an_error(made: tuple[Path, Path], tmp_path: Path, extra: object,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ck, _ = made
    run = tmp_path / "run"
    shutil.copytree(ck, run)
    if extra == "config":
        f = tmp_path / "c.yaml"
        f.write_text("rounds: 4\n")
        extra = [str(f)]
    assert main(["run", "--quiet", "--resume", str(run), *extra]) == 2  # type: ignore[list-item]
    err = capsys.readouterr().err
    assert "differ from the checkpoint" in err and "in the checkpoint" in err
    assert not (run / "summary.json").exists()


def test_resume_with_agreeing_set_values_is_fine(made: tuple[Path, Path], tmp_path: Path) -> None:
    ck, ref = made
    run = tmp_path / "run"
    shutil.copytree(ck, run)
    assert main(["run", "--quiet", "--resume", str(run), "--set", "rounds=4", "--set", "attack.name=sign_flip"]) == 0
    assert (run / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
