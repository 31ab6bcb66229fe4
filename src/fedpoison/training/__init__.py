"""Local training: the sequential engine, the batched (vmap) engine, evaluation."""

from fedpoison.training.local import ClientJob, LocalPlan, SequentialEngine, batch_schedule, clip_rows, evaluate

__all__ = ["ClientJob", "LocalPlan", "SequentialEngine", "batch_schedule", "clip_rows", "evaluate"]
