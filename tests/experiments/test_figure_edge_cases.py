"""Figures on awkward results: one column, one round, zero and undefined rates."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from experiment_fakes import fake_history

from fedpoison.results import figures, load


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Keep each figure's axes facts before ``_save`` closes it."""
    seen: dict[str, Any] = {}
    real = figures._save

    def save(fig: Any, folder: Any, name: str, title: str, caption: str) -> Any:
        fig.canvas.draw()
        seen[name] = {"axes": [(ax.get_position().width * fig.get_figwidth(), ax.get_xticks().tolist(),
                                ax.get_ylabel(), [len(line.get_xdata()) for line in ax.get_lines()],
                                [line.get_marker() for line in ax.get_lines()]) for ax in fig.axes],
                      "size": tuple(fig.get_size_inches())}
        return real(fig, folder, name, title, caption)

    monkeypatch.setattr(figures, "_save", save)
    return seen


def test_one_round_draws_points_and_integer_ticks(fake_store, captured, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([({"attack.name": "none", "defense.name": "mean", "rounds": 1}, fake_history(1, 0.8), None),
                    ({"attack.name": "none", "defense.name": "mean", "rounds": 1, "seed": 1},
                     fake_history(1, 0.7), None)])
    assert figures.accuracy_vs_round(load(d), tmp_path) is not None
    (_, ticks, _, points, markers), = captured["accuracy_vs_round"]["axes"]
    assert points == [1] and markers == ["o"], "a one-round curve must still draw its point"
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_round_ticks_are_whole_numbers(fake_store, captured, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([({"attack.name": "none", "defense.name": "mean", "rounds": 10}, fake_history(10, 0.8), None)])
    figures.accuracy_vs_round(load(d), tmp_path)
    (_, ticks, _, _, _), = captured["accuracy_vs_round"]["axes"]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)  # matplotlib's default: 2.5, 7.5, ...


def test_heatmap_with_one_defense_keeps_a_readable_colour_bar(fake_store, captured, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([({"attack.name": "none", "defense.name": "mean"}, fake_history(4, 0.9), None),
                    ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "mean"},
                     fake_history(4, 0.3), None)])
    assert figures.heatmap_final_accuracy(load(d), tmp_path) is not None
    info = captured["heatmap_final_accuracy"]
    heat, bar = info["axes"]
    assert bar[2] == "final accuracy"
    assert bar[0] >= 0.1 and heat[0] >= 0.6, f"heatmap {heat[0]:.2f} in, colour bar {bar[0]:.2f} in"
    assert info["size"][0] >= 3.0


def test_zero_and_undefined_bars_are_labelled_differently() -> None:
    fig, ax = plt.subplots()
    heights = np.array([0.5, 0.0, np.nan])
    ax.bar(np.arange(3), heights)
    placed = figures.mark_zero_and_undefined(ax, np.arange(3.0), heights)
    assert placed == ["0", "n/a"]
    assert [t.get_text() for t in ax.texts] == ["0", "n/a"] and [t.get_position()[0] for t in ax.texts] == [1, 2]
    plt.close(fig)


def test_heatmap_cells_tell_diverged_missing_and_undefined_apart() -> None:
    nan = float("nan")
    assert figures.heatmap_cell_text(0.904, diverged=False, missing=False) == "0.90"
    assert figures.heatmap_cell_text(nan, diverged=True, missing=False) == "div."
    assert figures.heatmap_cell_text(nan, diverged=False, missing=True) == "–"
    assert figures.heatmap_cell_text(nan, diverged=False, missing=False) == "n/a"


def test_heatmap_marks_a_combination_the_grid_leaves_out(fake_store, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([
        ({"attack.name": "none", "defense.name": "mean"}, fake_history(4, 0.9), None),
        ({"attack.name": "none", "defense.name": "median"}, fake_history(4, 0.88), None),
        ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "mean"}, fake_history(4, 0.3), None),
    ])
    texts: list[str] = []
    real_save = figures._save

    def save(fig, folder, name, title, caption):  # type: ignore[no-untyped-def]
        texts.extend(t.get_text() for t in fig.axes[0].texts)
        return real_save(fig, folder, name, title, caption)

    monkeypatch.setattr(figures, "_save", save)
    figures.heatmap_final_accuracy(load(d), tmp_path)
    # rows none, sign_flip, worst case; columns mean, median: sign_flip x median is not in the grid
    assert len(texts) == 6 and texts[3] == "–"
    assert all(float(t) > 0 for i, t in enumerate(texts) if i != 3)
    assert texts[4] == texts[2] and texts[5] == texts[1]  # worst cases; the missing cell does not count as 0
