"""Trigger examples: a few test inputs, clean and with the attacker's final trigger.

A run with a backdoor attack keeps ``EXAMPLES`` test inputs (the first of
distinct classes other than the target, in test-set order) and the same
inputs as the attack stamps them at the end of the run
(:meth:`~fedpoison.attacks.base.Attack.backdoor`, so a learned trigger, A3FL's
pattern or IBA's generated perturbation, is shown as it was last optimised).
They are saved as ``trigger_examples.safetensors`` beside the run's other
files (never pickle) and shown by the report as clean / triggered /
difference images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from fedpoison.attacks.base import Attack

#: File name of a run's trigger examples.
EXAMPLES_FILE = "trigger_examples.safetensors"
#: How many examples a run keeps.
EXAMPLES = 4


def example_indices(y: Tensor, target: int, k: int = EXAMPLES) -> Tensor:
    """Indices of the first test input of each class other than ``target``, in test-set order, at most ``k``.

    Example
    -------
    >>> example_indices(torch.tensor([0, 0, 2, 1, 2, 3]), target=0, k=2).tolist()
    [2, 3]
    """
    seen: set[int] = set()
    out: list[int] = []
    for i, label in enumerate(y.tolist()):
        if label != target and label not in seen:
            seen.add(label)
            out.append(i)
            if len(out) == k:
                break
    return torch.tensor(out, dtype=torch.long)


def capture(attack: Attack | None, x_test: Tensor, y_test: Tensor, k: int = EXAMPLES) -> dict[str, Tensor] | None:
    """``{"clean": (k, *shape), "triggered": (k, *shape)}`` on the CPU, or ``None`` without a trigger."""
    if attack is None or attack.target_class is None:
        return None
    idx = example_indices(y_test.cpu(), attack.target_class, k).to(y_test.device)
    if not len(idx):
        return None
    clean = x_test[idx]
    triggered = attack.backdoor(clean)
    if triggered is None:
        return None
    return {"clean": clean.detach().float().cpu().contiguous(),
            "triggered": triggered.detach().float().cpu().contiguous()}


def encode(examples: dict[str, Tensor], *, attack: str) -> bytes:
    """The examples as safetensors bytes, with the attack's name in the metadata."""
    from safetensors.torch import save

    return save(examples, metadata={"attack": attack})


def read(path: str | Path) -> dict[str, np.ndarray] | None:
    """The examples of a run's file: ``clean`` and ``triggered`` arrays of one shape; ``None`` if unreadable."""
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
    except Exception:  # safetensors raises several types for a corrupt file
        return None
    clean, triggered = data.get("clean"), data.get("triggered")
    if clean is None or triggered is None or clean.shape != triggered.shape or not len(clean):
        return None
    return {"clean": np.asarray(clean, dtype=np.float32), "triggered": np.asarray(triggered, dtype=np.float32)}
