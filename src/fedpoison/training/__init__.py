"""Local training: the sequential engine, the batched (vmap) engine, evaluation."""

from fedpoison.training.batched import BatchedEngine, choose_engine
from fedpoison.training.local import (
    ClientJob,
    Engine,
    LocalPlan,
    SequentialEngine,
    StepHooks,
    batch_schedule,
    clip_rows,
    evaluate,
)

__all__ = [
    "BatchedEngine",
    "ClientJob",
    "Engine",
    "LocalPlan",
    "SequentialEngine",
    "StepHooks",
    "batch_schedule",
    "choose_engine",
    "clip_rows",
    "evaluate",
]
