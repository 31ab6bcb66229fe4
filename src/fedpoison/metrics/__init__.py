"""Run-level metrics: accuracy, attack success, convergence, stability, detection."""

from fedpoison.metrics.summary import summarize

__all__ = ["summarize"]
