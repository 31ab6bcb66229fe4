"""Atomic checkpoints of a run, and resuming from them.

A checkpoint is one safetensors file, ``checkpoint.safetensors``, written
through a temp file and a rename. Its tensors are the global model, what each
attacker sent last, and every tensor in the defense's and auditor's state; its
metadata holds the resolved config, the round and the history as JSON. Nothing
is pickled. Random state needs no saving: every generator is derived from
``(seed, purpose, round, client)`` (:mod:`fedpoison.seeding`), so a resumed run
draws exactly the bits the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from fedpoison.config import ExperimentConfig
from fedpoison.errors import ConfigError
from fedpoison.plugins import validate_config
from fedpoison.simulation.federation import Federation, build_federation
from fedpoison.simulation.loop import LoopState, run_round
from fedpoison.simulation.result import RunResult, atomic_write_bytes, make_result, remove_stale_temps

CHECKPOINT = "checkpoint.safetensors"
FORMAT = 1


def _split(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace tensors in a nested structure by references; collect them in ``tensors``."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, Tensor], device: torch.device) -> Any:
    if isinstance(obj, dict) and set(obj) == {"__tensor__"}:
        return tensors[obj["__tensor__"]].to(device)
    if isinstance(obj, dict):
        return {k: _join(v, tensors, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors, device) for v in obj]
    return obj


def _stateful(obj: Any) -> bool:
    return hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")


def save_checkpoint(fed: Federation, state: LoopState, out: Path) -> Path:
    """Write ``out/checkpoint.safetensors`` atomically."""
    tensors: dict[str, Tensor] = {"params": state.params.detach().cpu().contiguous()}
    plugin_state = {
        "defense": fed.defense.state_dict() if _stateful(fed.defense) else None,
        "auditor": fed.auditor.state_dict() if fed.auditor is not None and _stateful(fed.auditor) else None,
        "previous_malicious": {str(k): v for k, v in state.previous_malicious.items()},
    }
    meta = {
        "format": str(FORMAT),
        "config": json.dumps(fed.cfg.to_dict()),
        "round": str(state.round),
        "history": json.dumps(state.history),
        "timings": json.dumps(state.timings),
        "clients": json.dumps(state.clients),
        "plugins": json.dumps(_split(plugin_state, "plugins", tensors)),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / CHECKPOINT, save(tensors, metadata=meta))
    return out / CHECKPOINT


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    file = path / CHECKPOINT if path.is_dir() else path
    if not file.exists():
        raise ConfigError(f"--resume {path}: expected a checkpoint file {file}, found none "
                          "(was the run started with --checkpoint-every?)")
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"--resume {file}: not a readable fedpoison checkpoint ({exc})") from None
    if meta.get("format") != str(FORMAT):
        raise ConfigError(f"--resume {file}: expected checkpoint format {FORMAT}, got {meta.get('format')!r}")
    return tensors, meta


def load_checkpoint_config(path: Path) -> ExperimentConfig:
    """The resolved config stored in a checkpoint."""
    _, meta = _read(Path(path))
    return validate_config(json.loads(meta["config"]))


def restore(fed: Federation, path: Path) -> LoopState:
    """A loop state restored from ``path`` into a freshly built federation."""
    tensors, meta = _read(Path(path))
    plugins = _join(json.loads(meta["plugins"]), tensors, fed.device)
    state = LoopState(params=tensors["params"].to(fed.device), round=int(meta["round"]))
    state.history = json.loads(meta["history"])
    state.timings = json.loads(meta["timings"])
    state.clients = json.loads(meta["clients"])
    state.previous_malicious = {int(k): v for k, v in plugins["previous_malicious"].items()}
    if plugins["defense"] is not None and _stateful(fed.defense):
        fed.defense.load_state_dict(plugins["defense"])
    if plugins["auditor"] is not None and fed.auditor is not None:
        fed.auditor.load_state_dict(plugins["auditor"])
    return state


def run_with_checkpoints(
    cfg: ExperimentConfig,
    *,
    out: Path | None = None,
    every: int = 0,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run ``cfg``, checkpointing every ``every`` rounds into ``out``; optionally resume from it."""
    import time

    start = time.perf_counter()
    fed = build_federation(cfg)
    if resume:
        if out is None:
            raise ConfigError("--resume: expected a run directory, got none")
        state = restore(fed, out)
        remove_stale_temps(out)  # a kill during a write leaves its temp file behind
    else:
        state = LoopState(params=fed.init_params.clone())
    setup_s = time.perf_counter() - start
    while state.round < cfg.rounds and state.diverged_round is None:
        record = run_round(fed, state)
        if progress is not None:
            progress(record)
        if every and out is not None and (state.round % every == 0 or state.round == cfg.rounds):
            save_checkpoint(fed, state, out)
    return make_result(fed, state, setup_s=setup_s)
