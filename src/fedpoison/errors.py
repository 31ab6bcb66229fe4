"""Exceptions raised by fedpoison, and its warnings.

Every message names the field or file, what was expected and what was received.
"""

from __future__ import annotations


class FedPoisonError(Exception):
    """Base class of fedpoison's own errors."""


class ConfigError(FedPoisonError, ValueError):
    """A config value, key or combination is invalid.

    The CLI prints the message and exits with code 2, with no traceback.
    """


class DataError(FedPoisonError, OSError):
    """A dataset file is missing or corrupt; the message names the path and how to get it."""


class AggregationError(FedPoisonError, ValueError):
    """An aggregation rule's requirement on n and f is broken at call time."""


class UpdateError(FedPoisonError, ValueError):
    """A client update has the wrong length or dtype; the message names the client."""


class ResultsError(FedPoisonError, ValueError):
    """A results file or directory is missing, corrupt or of an unknown format."""


class FedPoisonWarning(UserWarning):
    """Base class of fedpoison's own warnings (the command line prints each as one ``warning:`` line)."""
