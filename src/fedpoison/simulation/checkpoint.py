"""Atomic checkpoints of a run, validated in full when resumed.

A checkpoint is two files in the run's folder:

* ``checkpoint.safetensors``, written through a temp file and a rename. Its
  tensors are the global model, what each attacker sent last, and every
  tensor in the defense's and auditor's state; its metadata holds the resolved
  config, the round, the history and the position of the audit log.
* ``checkpoint-audit.jsonl``, the audit log (one JSON line per client per
  round), append-only. Each checkpoint appends the rows of the rounds since
  the last one and records the log's length and SHA-256, so the header stays
  small however long the run and however many clients take part. Rows a kill
  left past the last checkpoint are cut off when resuming.

Resuming validates everything against the run that resumes: the format, every
metadata field's type and range, the config (equal to the resuming run's),
the round, the history's length, the tensor names, shapes and dtypes, the
plug-in state, and the checksums of the metadata, the tensors and the audit
log. Anything off is one
:class:`~fedpoison.errors.ConfigError` naming the file and the field.

Nothing is pickled. Random state needs no saving: every generator is derived
from ``(seed, purpose, round, client)`` (:mod:`fedpoison.seeding`), so a
resumed run draws exactly the bits the uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from fedpoison.config import ExperimentConfig
from fedpoison.errors import ConfigError
from fedpoison.plugins import load_config, validate_config
from fedpoison.safe_fs import is_link
from fedpoison.simulation.federation import Federation, build_federation
from fedpoison.simulation.loop import LoopState, drive
from fedpoison.simulation.result import RunResult, atomic_write_bytes, make_result, remove_stale_temps

CHECKPOINT = "checkpoint.safetensors"
AUDIT_LOG = "checkpoint-audit.jsonl"
FORMAT = 2
#: Metadata keys of a checkpoint and the JSON type each must decode to.
META_KEYS: dict[str, type | tuple[type, ...]] = {
    "config": dict, "round": int, "diverged_round": (int, type(None)), "history": list, "timings": list,
    "plugins": dict, "audit_rows": int, "audit_bytes": int, "audit_sha256": str, "tensors_sha256": str,
}


def meta_sha256(meta: Mapping[str, str]) -> str:
    """SHA-256 over every metadata field but ``meta_sha256`` itself, in key order."""
    body = json.dumps({k: v for k, v in meta.items() if k != "meta_sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---- the audit log -------------------------------------------------------------------
class AuditLog:
    """The append-only audit log beside a checkpoint (``checkpoint-audit.jsonl``)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / AUDIT_LOG
        self.rows = 0
        self.bytes = 0
        self._hash = hashlib.sha256()

    @classmethod
    def fresh(cls, folder: Path) -> AuditLog:
        """An empty log (an older run's log in ``folder`` is removed)."""
        log = cls(folder)
        log.path.unlink(missing_ok=True)
        return log

    @property
    def sha256(self) -> str:
        """SHA-256 of the log's first :attr:`bytes` bytes."""
        return self._hash.hexdigest()

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` (one JSON line each), fsynced."""
        data = b"".join(json.dumps(dict(r), separators=(",", ":")).encode() + b"\n" for r in rows)
        n = data.count(b"\n")
        if not data:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        try:
            os.lseek(fd, 0, os.SEEK_END)
            if os.lseek(fd, 0, os.SEEK_CUR) != self.bytes:  # rows of a killed write past the last checkpoint
                os.ftruncate(fd, self.bytes)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._hash.update(data)
        self.rows += n
        self.bytes += len(data)

    def restore(self, rows: int, nbytes: int, sha256: str, where: str) -> list[dict[str, Any]]:
        """Read the first ``nbytes`` bytes, check them against ``rows`` and ``sha256``, cut off the rest."""
        if nbytes == 0:
            self.path.unlink(missing_ok=True)
            return []
        if is_link(self.path) or not self.path.is_file():
            raise ConfigError(f"{where}: expected the audit log {self.path} beside the checkpoint, found none")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
            with os.fdopen(fd, "r+b") as fh:
                data = fh.read(nbytes)
                if len(data) != nbytes:
                    raise ConfigError(f"{where}: audit log {self.path} has {len(data)} bytes, the checkpoint "
                                      f"covers {nbytes}")
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise ConfigError(f"{where}: audit log {self.path} does not match the checkpoint's checksum")
                fh.truncate(nbytes)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the audit log {self.path} ({exc.strerror})") from None
        try:
            out = [json.loads(line) for line in data.decode().splitlines()]
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ConfigError(f"{where}: audit log {self.path} does not parse ({exc})") from None
        if len(out) != rows or not all(isinstance(r, dict) for r in out):
            raise ConfigError(f"{where}: audit log {self.path}: expected {rows} rows, got {len(out)}")
        self.rows, self.bytes = rows, nbytes
        self._hash = hashlib.sha256(data)
        return out


# ---- tensors in nested plug-in state ---------------------------------------------------
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


def _refs(obj: Any) -> list[str]:
    """Tensor names a nested structure refers to (raises ``ValueError`` on a malformed reference)."""
    if isinstance(obj, dict) and "__tensor__" in obj:
        if set(obj) != {"__tensor__"} or not isinstance(obj["__tensor__"], str):
            raise ValueError(f"malformed tensor reference {str(obj)[:80]}")
        return [obj["__tensor__"]]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _refs(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _refs(v)]
    return []


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


# ---- writing --------------------------------------------------------------------------
def save_checkpoint(fed: Federation, state: LoopState, out: Path, log: AuditLog | None = None) -> Path:
    """Write ``out/checkpoint.safetensors`` atomically, after appending new audit rows to ``log``.

    Without ``log``, the audit log is rewritten from ``state.clients``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if log is None:
        log = AuditLog.fresh(out)
    log.append(state.clients[log.rows:])
    tensors: dict[str, Tensor] = {"params": state.params.detach().cpu().contiguous()}
    if state.previous_params is not None:  # the last global update, read by attacks such as neurotoxin
        tensors["previous_params"] = state.previous_params.detach().cpu().contiguous()
    plugin_state = {
        "defense": fed.defense.state_dict() if _stateful(fed.defense) else None,
        "auditor": fed.auditor.state_dict() if fed.auditor is not None and _stateful(fed.auditor) else None,
        "previous_malicious": {str(k): v for k, v in state.previous_malicious.items()},
    }
    if fed.attack is not None and _stateful(fed.attack):
        plugin_state["attack"] = fed.attack.state_dict()  # type: ignore[attr-defined]
    meta = {
        "format": str(FORMAT),
        "config": json.dumps(fed.cfg.to_dict()),
        "round": str(state.round),
        "diverged_round": json.dumps(state.diverged_round),
        "history": json.dumps(state.history),
        "timings": json.dumps(state.timings),
        "plugins": json.dumps(_split(plugin_state, "plugins", tensors)),
        "audit_rows": str(log.rows),
        "audit_bytes": str(log.bytes),
        "audit_sha256": json.dumps(log.sha256),
        "tensors_sha256": json.dumps(tensors_sha256(tensors)),
    }
    meta["meta_sha256"] = meta_sha256(meta)
    atomic_write_bytes(out / CHECKPOINT, save(tensors, metadata=meta))
    return out / CHECKPOINT


# ---- reading and validating -----------------------------------------------------------
def _file(path: Path) -> Path:
    return path / CHECKPOINT if path.is_dir() else path


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """Tensors, decoded metadata (types checked) and a ``--resume FILE`` prefix for errors."""
    file = _file(path)
    where = f"--resume {file}"
    if not file.exists() and not is_link(file):
        raise ConfigError(f"--resume {path}: expected a checkpoint file {file}, found none "
                          "(was the run started with --checkpoint-every?)")
    if is_link(file):
        raise ConfigError(f"{where}: the checkpoint is a symbolic link; fedpoison does not follow it")
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as fh:
            raw = fh.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError, UnicodeDecodeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{where}: not a readable fedpoison checkpoint ({reason})") from None
    if raw.get("format") != str(FORMAT):
        got = raw.get("format")
        raise ConfigError(f"{where}: expected checkpoint format {FORMAT}, got {got[:40] if isinstance(got, str) else got!r}")
    if raw.get("meta_sha256") != meta_sha256(raw):
        raise ConfigError(f"{where}: the metadata does not match its checksum (the file was changed)")
    meta: dict[str, Any] = {}
    for key, kind in META_KEYS.items():
        if key not in raw:
            raise ConfigError(f"{where}: metadata field '{key}' is missing")
        try:
            value = json.loads(raw[key])
        except (ValueError, RecursionError):
            raise ConfigError(f"{where}: metadata field '{key}' is not valid JSON") from None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not dict):
            name = kind.__name__ if isinstance(kind, type) else "an integer or null"
            raise ConfigError(f"{where}: metadata field '{key}': expected {name}, got {type(value).__name__}")
        meta[key] = value
    return tensors, meta, where


def _config_of(meta: Mapping[str, Any], where: str) -> ExperimentConfig:
    try:
        return validate_config(meta["config"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: the stored config is invalid ({exc})") from None


def load_checkpoint_config(path: Path) -> ExperimentConfig:
    """The resolved config stored in a checkpoint (validated)."""
    _, meta, where = _read(Path(path))
    return _config_of(meta, where)


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(stored: ExperimentConfig, asked: ExperimentConfig) -> list[str]:
    """``key=stored in the checkpoint, asked asked`` for every dotted key whose value differs."""
    a, b = _flat(stored.to_dict()), _flat(asked.to_dict())
    return [f"{k}={a.get(k)!r} in the checkpoint, {b.get(k)!r} asked" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def check_resume_config(path: Path, source: str | Path | None, overrides: Iterable[str]) -> ExperimentConfig:
    """The checkpoint's config, after checking that a config file and ``--set`` values agree with it.

    With neither, the checkpoint's config is used as is. A config file replaces
    it and ``--set`` values apply on top; the result must equal the stored one.
    """
    stored = load_checkpoint_config(path)
    overrides = list(overrides)
    if source is None and not overrides:
        return stored
    asked = load_config(source if source is not None else stored, overrides)
    diff = config_differences(stored, asked)
    if diff:
        shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise ConfigError(f"--resume {path}: the config file or --set values differ from the checkpoint's config "
                          f"({shown}); a run resumes only under its own config (drop them, or start a new run)")
    return stored


def _check_state_tensors(state: Any, where: str, what: str, *, dim: int, num_clients: int, per_client: bool) -> None:
    """Shapes of a plug-in's state against the run.

    A rule keeps model-length state (float tensors whose last axis is the
    model's length) and client ids (integer vectors within the federation); an
    auditor keeps per-client state (first axis the federation's size) and at
    most model-length vectors.
    """
    values = state.values() if isinstance(state, dict) else state if isinstance(state, list) else [state]
    for value in values:
        if isinstance(value, dict | list):
            _check_state_tensors(value, where, what, dim=dim, num_clients=num_clients, per_client=per_client)
            continue
        if not isinstance(value, Tensor) or value.ndim == 0:
            continue
        shape = tuple(value.shape)
        if per_client:
            ok = shape[0] == num_clients or shape == (dim,)
        elif value.is_floating_point():
            ok = shape[-1] == dim
        else:
            ok = value.ndim == 1 and (len(value) == 0 or (int(value.min()) >= 0 and int(value.max()) < num_clients))
        if not ok:
            raise ConfigError(f"{where}: {what} state has a tensor of shape {shape} that does not fit the run "
                              f"(model length {dim}, {num_clients} clients)")


def restore(fed: Federation, path: Path) -> LoopState:
    """A loop state restored from ``path`` into a freshly built federation, validated in full."""
    return restore_with_log(fed, path)[0]


def restore_with_log(fed: Federation, path: Path) -> tuple[LoopState, AuditLog]:
    """:func:`restore`, plus the audit log positioned after the checkpoint's rows."""
    path = Path(path)
    tensors, meta, where = _read(path)
    stored = _config_of(meta, where)
    diff = config_differences(stored, fed.cfg)
    if diff:
        raise ConfigError(f"{where}: the checkpoint belongs to another config ({'; '.join(diff[:3])})")
    cfg, dim = fed.cfg, fed.spec.dim
    rnd = meta["round"]
    if not 0 <= rnd <= cfg.rounds:
        raise ConfigError(f"{where}: round: expected 0..{cfg.rounds}, got {rnd}")
    history, timings = meta["history"], meta["timings"]
    if len(history) != rnd or not all(isinstance(r, dict) and r.get("round") == i for i, r in enumerate(history)):
        raise ConfigError(f"{where}: history: expected {rnd} records for rounds 0..{rnd - 1}, got {len(history)} "
                          "that do not match")
    if len(timings) != rnd or not all(isinstance(t, dict) for t in timings):
        raise ConfigError(f"{where}: timings: expected {rnd} records, got {len(timings)}")
    diverged = meta["diverged_round"]
    if diverged is not None and diverged != rnd - 1:
        raise ConfigError(f"{where}: diverged_round: expected null or {rnd - 1}, got {diverged}")
    try:
        refs = _refs(meta["plugins"])
    except ValueError as exc:
        raise ConfigError(f"{where}: plugins: {exc}") from None
    expected = {"params", *refs} | ({"previous_params"} if "previous_params" in tensors else set())
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ConfigError(f"{where}: tensors: missing {missing or 'none'}, unexpected {extra or 'none'}")
    if tensors_sha256(tensors) != meta["tensors_sha256"]:
        raise ConfigError(f"{where}: the tensors do not match the checkpoint's checksum (the file was changed)")
    params = tensors["params"]
    if tuple(params.shape) != (dim,) or params.dtype != torch.float32:
        raise ConfigError(f"{where}: params: expected float32 of shape ({dim},) for model '{cfg.model.name}', "
                          f"got {str(params.dtype).removeprefix('torch.')} of shape {tuple(params.shape)}")
    if diverged is None and not bool(torch.isfinite(params).all()):
        raise ConfigError(f"{where}: params: non-finite values in a run that has not diverged")
    plugins = _join(meta["plugins"], tensors, fed.device)
    if set(plugins) - {"attack"} != {"defense", "auditor", "previous_malicious"}:
        raise ConfigError(f"{where}: plugins: expected keys defense, auditor, previous_malicious (and attack for a "
                          f"stateful attack), got {sorted(plugins)}")
    prev = plugins["previous_malicious"]
    malicious = set(fed.malicious.tolist())
    if not isinstance(prev, dict):
        raise ConfigError(f"{where}: previous_malicious: expected a mapping")
    restored_prev: dict[int, Tensor] = {}
    for k, v in prev.items():
        if not k.isdigit() or int(k) not in malicious or not isinstance(v, Tensor) or tuple(v.shape) != (dim,):
            raise ConfigError(f"{where}: previous_malicious[{k}]: expected a malicious client's row of length {dim}")
        restored_prev[int(k)] = v
    previous = tensors.get("previous_params")
    if previous is not None and (tuple(previous.shape) != (dim,) or previous.dtype != torch.float32):
        raise ConfigError(f"{where}: previous_params: expected float32 of shape ({dim},), "
                          f"got {str(previous.dtype).removeprefix('torch.')} of shape {tuple(previous.shape)}")
    state = LoopState(params=params.to(fed.device), round=rnd, diverged_round=diverged,
                      previous_params=None if previous is None else previous.to(fed.device))
    state.history, state.timings, state.previous_malicious = history, timings, restored_prev
    for name, obj, per_client in (("defense", fed.defense, False), ("auditor", fed.auditor, True),
                                  ("attack", fed.attack, False)):
        value = plugins.get(name)
        if value is None:
            continue
        if obj is None or not _stateful(obj) or not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} state given, but the run's {name} keeps none")
        if name != "attack":  # an attack's state (a learned trigger, a generator) has its own shapes: it checks them
            _check_state_tensors(value, where, name, dim=dim, num_clients=fed.population, per_client=per_client)
        try:
            obj.load_state_dict(value)  # type: ignore[union-attr]
        except (KeyError, TypeError, ValueError, AssertionError, RuntimeError, AttributeError, IndexError) as exc:
            raise ConfigError(f"{where}: {name} state does not fit {name} '{getattr(cfg, 'audit' if name == 'auditor' else name).name}' "
                              f"({type(exc).__name__}: {exc})") from None
    rows, nbytes, sha = meta["audit_rows"], meta["audit_bytes"], meta["audit_sha256"]
    if rows < 0 or nbytes < 0:
        raise ConfigError(f"{where}: audit_rows and audit_bytes: expected >= 0, got {rows} and {nbytes}")
    folder = path if path.is_dir() else path.parent
    log = AuditLog(folder)
    state.clients = log.restore(rows, nbytes, sha, where)
    return state, log


def run_with_checkpoints(
    cfg: ExperimentConfig,
    *,
    out: Path | None = None,
    every: int = 0,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run ``cfg``, checkpointing every ``every`` rounds into ``out``; optionally resume from it.

    The rounds are driven by :func:`fedpoison.simulation.loop.drive`, as for a plain run.
    """
    if every < 0:
        raise ConfigError(f"--checkpoint-every: expected an integer >= 0, got {every}")
    start = time.perf_counter()
    fed = build_federation(cfg)
    if resume:
        if out is None:
            raise ConfigError("--resume: expected a run directory, got none")
        state, log = restore_with_log(fed, out)
        out = out if out.is_dir() else out.parent
        remove_stale_temps(out)  # a kill during a write leaves its temp file behind
    else:
        state = LoopState(params=fed.init_params.clone())
        log = AuditLog.fresh(out) if every and out is not None else AuditLog(Path("."))
    setup_s = time.perf_counter() - start

    def checkpoint(state: LoopState) -> None:
        if every and out is not None and (state.round % every == 0 or state.round == cfg.rounds
                                          or state.diverged_round is not None):
            save_checkpoint(fed, state, out, log)

    drive(fed, state, progress=progress, after_round=checkpoint)
    return make_result(fed, state, setup_s=setup_s)
