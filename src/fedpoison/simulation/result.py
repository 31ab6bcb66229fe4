"""The result of one run, and how it is written to a directory."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from fedpoison.config import ExperimentConfig
from fedpoison.metrics import summarize

if TYPE_CHECKING:
    from fedpoison.simulation.federation import Federation
    from fedpoison.simulation.loop import LoopState


def package_versions() -> dict[str, str]:
    """Versions that decide the numbers: fedpoison, torch, numpy, Python, platform."""
    import numpy

    from fedpoison import __version__

    return {"fedpoison": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


@dataclass
class RunResult:
    """Everything a run produced.

    Attributes
    ----------
    config:
        The resolved config (every default filled in).
    history:
        One row per round: accuracy and loss (when evaluated), train loss,
        participants, norms, defense measurements, attack metrics.
    timings:
        Wall seconds per phase per round, kept apart from ``history`` so that
        ``history.csv`` is byte-identical across reruns.
    clients:
        The audit log: one row per round per participant (norm, selection,
        auditor signals and decisions, and the ground truth for metrics).
    summary:
        Run-level numbers (``summary.json``).
    versions:
        Package versions.
    final_params:
        The final global model as a flat vector.
    extras:
        ``trigger_examples``: for backdoor attacks, a few test inputs clean and
        with the attacker's final trigger (:mod:`fedpoison.metrics.triggers`).
    """

    config: ExperimentConfig
    history: pd.DataFrame
    timings: pd.DataFrame
    clients: pd.DataFrame
    summary: dict[str, Any]
    versions: dict[str, str]
    final_params: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """The run seed."""
        return self.config.seed

    def save(self, out: str | Path) -> Path:
        """Write the run's files into ``out``, each atomically, ``summary.json`` last.

        The files are ``config.yaml``, ``history.csv``, ``timings.csv``,
        ``audit.csv``, ``model.safetensors``, ``certification.csv`` (per test
        input, when the rule certifies: ``crfl``), ``trigger_examples.safetensors``
        (backdoor attacks only) and ``summary.json``; the presence of
        ``summary.json`` means the run finished.
        """
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        # An older run's summary.json marks the folder finished: remove it before any new file
        # lands, so a write cut short (a full disk) never leaves it beside this run's files.
        (d / "summary.json").unlink(missing_ok=True)
        atomic_write(d / "config.yaml", self.config.to_yaml())
        atomic_write(d / "history.csv", self.history.to_csv(index=False))
        atomic_write(d / "timings.csv", self.timings.to_csv(index=False))
        atomic_write(d / "audit.csv", self.clients.to_csv(index=False))
        save_model(d / "model.safetensors", self.final_params, self.config)
        certification = self.extras.get("certification")
        if isinstance(certification, pd.DataFrame):
            atomic_write(d / "certification.csv", certification.to_csv(index=False))
        examples = self.extras.get("trigger_examples")
        if examples is not None:
            from fedpoison.metrics.triggers import EXAMPLES_FILE, encode

            atomic_write_bytes(d / EXAMPLES_FILE, encode(examples, attack=self.config.attack.name))
        atomic_write(d / "summary.json", json.dumps(_jsonable(self.summary | {"versions": self.versions}), indent=2))
        return d


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode())


def save_model(path: Path, params: torch.Tensor, config: ExperimentConfig) -> None:
    """Write the flat global model as safetensors (never pickle), atomically."""
    from safetensors.torch import save

    data = save({"params": params.detach().cpu().contiguous()}, metadata={"config": json.dumps(config.to_dict())})
    atomic_write_bytes(path, data)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files :func:`atomic_write_bytes` left in ``folder`` when killed mid-write.

    Only names of the writer's pattern (``.<name>.<random>.tmp``) are removed;
    returns them.
    """
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_model_params(path: str | Path) -> torch.Tensor:
    """Read the flat global model written by :meth:`RunResult.save` (no pickle)."""
    from safetensors.torch import load_file

    from fedpoison.errors import ResultsError

    try:
        return load_file(str(path))["params"]
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ResultsError(f"{path}: expected a fedpoison model.safetensors file, could not read it ({exc})") from None


def make_result(fed: Federation, state: LoopState, *, setup_s: float = 0.0) -> RunResult:
    """Assemble a :class:`RunResult` from a finished loop state."""
    history = pd.DataFrame(state.history)
    timings = pd.DataFrame(state.timings)
    clients = pd.DataFrame(state.clients)
    summary = summarize(history, timings)
    summary["seed"] = fed.cfg.seed
    summary["num_malicious"] = len(fed.malicious)
    summary["malicious_clients"] = [int(c) for c in fed.malicious.tolist()]
    summary["diverged"] = state.diverged_round is not None
    summary["diverged_round"] = state.diverged_round
    summary["skipped_rounds"] = sum(bool(r.get("aggregation_skipped")) for r in state.history)
    summary["setup_seconds"] = setup_s
    from fedpoison.metrics.detection import detection_summary, fake_client_detection, with_detection_columns

    if fed.num_fake:
        summary["num_fake_clients"] = fed.num_fake
    summary.update(detection_summary(clients))
    summary.update(fake_client_detection(clients))
    history = with_detection_columns(history, clients)
    from fedpoison.simulation.certify import certify_final

    extras: dict[str, Any] = {}
    if state.diverged_round is None:
        certified, table = certify_final(fed, state.params)
        summary.update(certified)
        if table is not None:
            extras["certification"] = table
        from fedpoison.metrics.triggers import capture

        examples = capture(fed.attack, fed.data.x_test, fed.data.y_test)
        if examples is not None:
            extras["trigger_examples"] = examples
    return RunResult(fed.cfg, history, timings, clients, summary, package_versions(), state.params.detach().cpu(),
                     extras)
