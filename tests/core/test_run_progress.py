"""``fedpoison.run(..., progress=...)``: a bar on stderr, a callback per round, or a clear error."""

from __future__ import annotations

from typing import Any

import pytest

import fedpoison
from fedpoison.errors import ConfigError
from fedpoison.progress import round_text

TINY = {"rounds": 3, "clients": {"num": 5}, "dataset": {"limit": 200}, "eval": {"every": 2}}


def test_progress_true_draws_a_bar_on_stderr_with_the_last_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    result = fedpoison.run(TINY, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    last = result.history.dropna(subset=["test_accuracy"]).iloc[-1]
    assert "round 3/3" in captured.err
    assert f"acc {last['test_accuracy']:.3f}" in captured.err and "ETA" in captured.err


def test_progress_callable_gets_each_round_and_changes_nothing() -> None:
    seen: list[dict[str, Any]] = []
    with_cb = fedpoison.run(TINY, progress=seen.append)
    plain = fedpoison.run(TINY)
    assert [r["round"] for r in seen] == [0, 1, 2]
    assert with_cb.history.to_csv(index=False) == plain.history.to_csv(index=False)
    with pytest.raises(ConfigError, match="progress: expected True, False, None or a callable"):
        fedpoison.run(TINY, progress="yes")  # type: ignore[arg-type]


def test_round_text_shows_evaluated_rounds_only() -> None:
    assert round_text({"round": 1, "test_accuracy": 0.91234, "test_loss": 0.3}) == "acc 0.912  loss 0.300"
    assert round_text({"round": 1, "train_loss": 0.3}) == ""
