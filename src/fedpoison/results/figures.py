"""Paper figures from loaded results (matplotlib, Agg), each written as PNG and PDF.

Sizes follow a two-column paper: 3.5 in for one column, 7 in across both,
8 pt text. Every figure function returns ``None`` when the results cannot
show it (e.g. no targeted attack, no malicious-fraction axis), so a report
holds only figures with something to say.

A figure shows some axes and holds the others fixed. Axes it does not show
are fixed at a *reference value* (the middle one of their sorted values; for
text values the most common one), and the caption says which.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from mpl_toolkits.axes_grid1 import make_axes_locatable

from fedpoison.results.tables import Results, as_text

ONE_COLUMN = 3.5
TWO_COLUMNS = 7.0
DPI = 200

_STYLE: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "lines.linewidth": 1.2, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02, "pdf.fonttype": 42, "ps.fonttype": 42, "figure.dpi": 100,
    "svg.hashsalt": "fedpoison", "path.simplify": True,
}


@dataclass(frozen=True)
class FigureFile:
    """A written figure: its name, title, caption and file paths."""

    name: str
    title: str
    caption: str
    png: Path
    pdf: Path


@contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib settings for paper figures (8 pt text, light grid, tight boxes)."""
    with plt.rc_context(_STYLE):  # type: ignore[arg-type]
        yield


# ---- slicing -----------------------------------------------------------------------
def _reference(values: pd.Series) -> Any:
    uniq = values.dropna().unique().tolist()
    if not uniq:
        return None
    try:
        numeric = sorted(float(v) for v in uniq)
    except (TypeError, ValueError):
        return as_text(values).value_counts().index[0]
    mid = numeric[(len(numeric) - 1) // 2]
    return next(v for v in uniq if float(v) == mid)


def fix_other_axes(results: Results, runs: pd.DataFrame, shown: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Keep the runs at the reference value of every varying axis not in ``shown``.

    Attack keys (but fraction and count), defense and audit keys, and the seed
    are always shown (they make the labels and the bands). Returns the runs and
    a caption fragment such as ``"attack.fraction = 0.2, partition.alpha = 1"``.
    """
    always = ("seed",)
    fixed = []
    for axis in results.axes:
        if axis in shown or axis in always:
            continue
        if axis.startswith(("defense.", "audit.")) or (
                axis.startswith("attack.") and axis not in ("attack.fraction", "attack.count")):
            continue
        # the malicious share means nothing without an attack: no-attack runs always stay
        exempt = (runs["attack.name"] == "none") if axis in ("attack.fraction", "attack.count") \
            else pd.Series(False, index=runs.index)
        if as_text(runs.loc[~exempt, axis]).nunique() <= 1:
            continue
        ref = _reference(runs.loc[~exempt, axis])
        runs = runs[exempt | (as_text(runs[axis]) == as_text(pd.Series([ref])).iloc[0])]
        fixed.append(f"{axis} = {ref}")
    return runs, ", ".join(fixed)


def _order(values: pd.Series) -> list[Any]:
    return list(dict.fromkeys(values.tolist()))


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


def _panels(n: int, *, width: float = TWO_COLUMNS, height: float = 1.9, max_cols: int = 3,
            sharey: bool = True) -> tuple[Any, list[Any]]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width if n > 1 else ONE_COLUMN, height * rows + 0.3),
                             sharey=sharey, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: Any, folder: Path, name: str, title: str, caption: str) -> FigureFile:
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    fig.savefig(png, dpi=DPI)
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None})
    plt.close(fig)
    return FigureFile(name, title, caption, png, pdf)


def _with_fixed(caption: str, fixed: str) -> str:
    return f"{caption} Fixed: {fixed}." if fixed else caption


def _curve_band(rounds: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` per round (evaluated rounds only)."""
    df = rounds.dropna(subset=[metric])
    g = df.groupby("round")[metric]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "n": g.count()})
    return out.reset_index()


# ---- figures -----------------------------------------------------------------------
def _curves(results: Results, folder: Path, metric: str, name: str, title: str, ylabel: str,
            caption: str, attack_filter: Callable[[pd.DataFrame], pd.Series] | None = None) -> FigureFile | None:
    runs, fixed = fix_other_axes(results, results.runs, shown=())
    if attack_filter is not None:
        runs = runs[attack_filter(runs)]
    rounds = results.rounds[results.rounds["key"].isin(runs["key"])]
    if metric not in rounds or rounds[metric].notna().sum() == 0:
        return None
    defenses = _order(runs["defense_label"])
    attacks = _order(runs["attack_label"])
    colors = _colors(_order(results.runs["attack_label"]))
    fig, axes = _panels(len(defenses))
    for ax, defense in zip(axes, defenses, strict=True):
        for attack in attacks:
            keys = runs[(runs["defense_label"] == defense) & (runs["attack_label"] == attack)]["key"]
            band = _curve_band(rounds[rounds["key"].isin(keys)], metric)
            if band.empty:
                continue
            x = band["round"] + 1
            ax.plot(x, band["mean"], color=colors[attack], label=attack,
                    marker="o" if len(band) <= 3 else None, markersize=3)  # one round is a point, not nothing
            ax.fill_between(x, band["mean"] - band["std"], band["mean"] + band["std"], color=colors[attack],
                            alpha=0.2, linewidth=0)
        ax.set_title(defense)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        shown_rounds = sorted({float(v) for line in ax.get_lines() for v in line.get_xdata()})
        if len(shown_rounds) == 1:  # a single round: one tick on it, not a zoom into fractions
            ax.set_xlim(shown_rounds[0] - 1, shown_rounds[0] + 1)
            ax.set_xticks(shown_rounds)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel(ylabel)
    _shared_legend(fig, axes, top=0.9)
    return _save(fig, folder, name, title, _with_fixed(caption, fixed))


def _shared_legend(fig: Any, axes: Any, *, top: float) -> None:
    """One legend above all panels, each label once (panels may lack some lines)."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.0),
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, top))


def accuracy_vs_round(results: Results, folder: Path) -> FigureFile | None:
    """Test accuracy vs round, one panel per defense, one line per attack, band = ± std over seeds."""
    return _curves(results, folder, "test_accuracy", "accuracy_vs_round", "Accuracy vs round",
                   "test accuracy",
                   "Clean test accuracy of the global model after each round, one panel per defense, one "
                   "line per attack; lines are the mean over seeds, bands ± one standard deviation.")


def asr_vs_round(results: Results, folder: Path) -> FigureFile | None:
    """Attack success rate vs round for the targeted attacks."""
    rounds = results.rounds
    if "attack_success_rate" not in rounds:
        return None
    targeted = set(rounds.dropna(subset=["attack_success_rate"])["attack_label"])
    return _curves(results, folder, "attack_success_rate", "asr_vs_round", "Attack success rate vs round",
                   "attack success rate",
                   "Backdoor success rate (share of triggered test inputs, outside the target class, that "
                   "the global model assigns to the target class) after each round, one panel per defense; "
                   "mean over seeds ± one standard deviation.",
                   attack_filter=lambda r: r["attack_label"].isin(targeted))


def heatmap_cell_text(value: float, *, diverged: bool, missing: bool) -> str:
    """A heatmap cell's label: the accuracy, ``div.`` (diverged), ``–`` (not in the grid) or ``n/a`` (undefined).

    Examples
    --------
    >>> [heatmap_cell_text(0.9, diverged=False, missing=False), heatmap_cell_text(float("nan"), diverged=True,
    ...  missing=False), heatmap_cell_text(float("nan"), diverged=False, missing=True)]
    ['0.90', 'div.', '–']
    """
    if missing:
        return "–"
    if diverged:
        return "div."
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def heatmap_final_accuracy(results: Results, folder: Path) -> FigureFile | None:
    """Final accuracy, attack x defense, with each defense's worst case over the attacks."""
    runs, fixed = fix_other_axes(results, results.runs, shown=())
    attacks, defenses = _order(runs["attack_label"]), _order(runs["defense_label"])
    if len(attacks) * len(defenses) < 2:
        return None
    cells = runs.groupby(["attack_label", "defense_label"])
    means = cells["final_accuracy"].mean().unstack("defense_label").reindex(index=attacks, columns=defenses)
    counts = cells.size().unstack("defense_label").reindex(index=attacks, columns=defenses).fillna(0)
    diverged = (cells["diverged"].any().unstack("defense_label").reindex(index=attacks, columns=defenses)
                .fillna(False).astype(bool) if "diverged" in runs else means.isna() & False)
    diverged &= means.isna()  # every seed diverged: no accuracy to show
    worst = means.mask(diverged, 0.0).min(axis=0)  # a diverged cell counts as 0; a missing one not at all
    grid = np.vstack([means.to_numpy(dtype=float), worst.to_numpy(dtype=float)[None, :]])
    row_labels = [*attacks, "worst case"]
    w = min(TWO_COLUMNS, max(3.0, 1.4 + 0.75 * len(defenses)))  # one column must not squash the colour bar
    h = 0.8 + 0.32 * len(row_labels)
    fig, ax = plt.subplots(figsize=(w, h))
    shown = np.ma.masked_invalid(grid)
    im = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.axhline(len(attacks) - 0.5, color="white", linewidth=2)
    ax.grid(False)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            text = heatmap_cell_text(grid[i, j], diverged=i < len(attacks) and bool(diverged.iloc[i, j]),
                                     missing=i < len(attacks) and counts.iloc[i, j] == 0)
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if math.isnan(grid[i, j]) or grid[i, j] > 0.6 else "white")
    cax = make_axes_locatable(ax).append_axes("right", size=0.15, pad=0.1)  # fixed width in inches
    fig.colorbar(im, cax=cax, label="final accuracy")
    ax.set_xlabel("defense")
    ax.set_ylabel("attack")
    fig.tight_layout()
    caption = ("Final clean accuracy (mean of the last k evaluations, mean over seeds), attack x defense. "
               "The last row is each defense's worst case over the attacks; 'div.' marks runs whose model "
               "diverged (counted as 0 in the worst case), '–' a combination the grid does not run.")
    return _save(fig, folder, "heatmap_final_accuracy", "Final accuracy: attack x defense",
                 _with_fixed(caption, fixed))


def _sweep(results: Results, folder: Path, x_of: Callable[[pd.DataFrame], pd.Series], shown: Sequence[str],
           name: str, title: str, xlabel: str, caption: str, *, logx: bool = False,
           inf_label: str | None = None) -> FigureFile | None:
    runs, fixed = fix_other_axes(results, results.runs, shown=shown)
    runs = runs.assign(_x=x_of(runs)).dropna(subset=["_x"])
    if runs["_x"].nunique() < 2:
        return None
    attacks = [a for a in _order(runs["attack_label"]) if not a.startswith("none")] or _order(runs["attack_label"])
    defenses = _order(runs["defense_label"])
    colors = _colors(_order(results.runs["defense_label"]))
    finite = runs["_x"][np.isfinite(runs["_x"])]
    inf_at = float(finite.max()) * 10 if logx and len(finite) else float(finite.max() + 1) if len(finite) else 1.0
    fig, axes = _panels(len(attacks), height=2.0)
    for ax, attack in zip(axes, attacks, strict=True):
        for defense in defenses:
            sub = runs[(runs["attack_label"] == attack) & (runs["defense_label"] == defense)]
            if sub.empty:
                continue
            stats = sub.groupby("_x")["final_accuracy"].agg(["mean", "std"]).sort_index()
            x = np.where(np.isinf(stats.index.to_numpy(dtype=float)), inf_at, stats.index.to_numpy(dtype=float))
            ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0.0), color=colors[defense], marker="o",
                        markersize=3, capsize=2, label=defense)
        ax.set_title(attack)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.02)
        if logx:
            ax.set_xscale("log")
        if inf_label and np.isinf(runs["_x"]).any():
            ticks = [t for t in ax.get_xticks() if t < inf_at]
            ax.set_xticks([*ticks, inf_at], [*(f"{t:g}" for t in ticks), inf_label])
            ax.set_xlim(float(finite.min()) / 2 if logx else None, inf_at * 1.5 if logx else None)
    axes[0].set_ylabel("final accuracy")
    _shared_legend(fig, axes, top=0.88)
    return _save(fig, folder, name, title, _with_fixed(caption, fixed))


def accuracy_vs_fraction(results: Results, folder: Path) -> FigureFile | None:
    """Final accuracy vs the share of malicious clients, one line per defense, one panel per attack."""
    if "attack.fraction" not in results.axes and "attack.count" not in results.axes:
        return None

    def x_of(r: pd.DataFrame) -> pd.Series:
        return r["num_malicious"] / r["clients.num"] if "num_malicious" in r else r["attack.fraction"]

    return _sweep(results, folder, x_of, ("attack.fraction", "attack.count"), "accuracy_vs_fraction",
                  "Accuracy vs malicious fraction", "malicious fraction",
                  "Final clean accuracy against the share of malicious clients, one panel per attack, one "
                  "line per defense; mean over seeds, error bars ± one standard deviation.")


def accuracy_vs_alpha(results: Results, folder: Path) -> FigureFile | None:
    """Final accuracy vs the Dirichlet concentration (IID drawn at the right end)."""
    if not any(a in results.axes for a in ("partition.alpha", "partition.name")):
        return None

    def x_of(r: pd.DataFrame) -> pd.Series:
        name = as_text(r["partition.name"])
        x = pd.Series(np.nan, index=r.index)
        x[name == "dirichlet"] = r.loc[name == "dirichlet", "partition.alpha"].astype(float)
        x[name == "iid"] = np.inf
        return x

    return _sweep(results, folder, x_of, ("partition.alpha", "partition.name"), "accuracy_vs_alpha",
                  "Accuracy vs non-IID degree", "Dirichlet alpha (smaller = more skewed)",
                  "Final clean accuracy against the Dirichlet concentration of the label partition (IID at "
                  "the right), one panel per attack, one line per defense; mean over seeds ± one standard "
                  "deviation.", logx=True, inf_label="IID")


def accuracy_vs_clients(results: Results, folder: Path) -> FigureFile | None:
    """Final accuracy vs the number of clients (few vs many)."""
    if "clients.num" not in results.axes:
        return None
    return _sweep(results, folder, lambda r: r["clients.num"].astype(float), ("clients.num",),
                  "accuracy_vs_clients", "Accuracy vs number of clients", "clients",
                  "Final clean accuracy against the number of clients in the federation, one panel per "
                  "attack, one line per defense; mean over seeds ± one standard deviation.", logx=True)


def mark_zero_and_undefined(ax: Any, x: np.ndarray, heights: np.ndarray) -> list[str]:
    """Label the bars that draw nothing: ``0`` for a zero rate, ``n/a`` for an undefined (NaN) one.

    Both would otherwise look the same (no bar). Returns the labels placed, in order.
    """
    placed = []
    for xi, h in zip(x, heights, strict=True):
        if math.isnan(h) or h == 0.0:
            label = "n/a" if math.isnan(h) else "0"
            ax.text(xi, 0.02, label, ha="center", va="bottom", rotation=90, fontsize=5.5,
                    color="0.45" if label == "n/a" else "black")
            placed.append(label)
    return placed


def detection(results: Results, folder: Path) -> FigureFile | None:
    """Detection precision, recall and false-positive rate per defense (or auditor), per attack."""
    runs, fixed = fix_other_axes(results, results.runs, shown=())
    cols = ["detection_precision", "detection_recall", "detection_fpr"]
    if not all(c in runs for c in cols):
        return None
    runs = runs[~runs["attack_label"].str.startswith("none") & runs["detection_recall"].notna()]
    # rules that select every row (mean, median) detect nothing by construction: leave them out
    flagging = runs.groupby("defense_label")[["detection_tp", "detection_fp"]].sum().sum(axis=1) \
        if "detection_tp" in runs else None
    if flagging is not None:
        runs = runs[runs["defense_label"].isin(flagging[flagging > 0].index)]
    if runs.empty:
        return None
    attacks, defenses = _order(runs["attack_label"]), _order(runs["defense_label"])
    fig, axes = _panels(len(attacks), height=2.1)
    width = 0.8 / len(cols)
    colors = {"detection_precision": "tab:blue", "detection_recall": "tab:orange", "detection_fpr": "tab:gray"}
    names = {"detection_precision": "precision", "detection_recall": "recall", "detection_fpr": "FPR"}
    for ax, attack in zip(axes, attacks, strict=True):
        sub = runs[runs["attack_label"] == attack]
        stats = sub.groupby("defense_label")[cols].agg(["mean", "std"]).reindex(defenses)
        x = np.arange(len(defenses))
        for i, c in enumerate(cols):
            ax.bar(x + (i - 1) * width, stats[(c, "mean")], width,  # NaN (undefined) draws no bar
                   yerr=stats[(c, "std")].fillna(0.0), color=colors[c], label=names[c], capsize=1.5,
                   error_kw={"linewidth": 0.6})
            mark_zero_and_undefined(ax, x + (i - 1) * width, stats[(c, "mean")].to_numpy(dtype=float))
        ax.set_xticks(x, defenses, rotation=30, ha="right")
        ax.set_xlim(-0.6, max(len(defenses), 3) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_title(attack)
    axes[0].set_ylabel("rate")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    caption = ("Detection of the attacking rows per defense or auditor, one panel per attack: precision, "
               "recall and false-positive rate over all participant rows of all rounds (mean over seeds "
               "± one standard deviation); '0' marks a rate of zero and 'n/a' an undefined one (e.g. "
               "precision when nothing was flagged). Rules that keep every row detect nothing and are left out.")
    return _save(fig, folder, "detection", "Detection precision and recall", _with_fixed(caption, fixed))


def as_image(x: np.ndarray) -> np.ndarray:
    """One input as an image for ``imshow``: ``(H, W)`` grey or ``(H, W, 3)`` colour; vectors as a ``1 x D`` strip."""
    if x.ndim == 3 and x.shape[0] == 1:
        return np.asarray(x[0])
    if x.ndim == 3:
        return np.transpose(x, (1, 2, 0))
    if x.ndim == 2:
        return x
    return x.reshape(1, -1)


def trigger_examples(results: Results, folder: Path, *, per_attack: int = 2) -> FigureFile | None:
    """Clean input, triggered input and their difference, for each backdoor attack of the results.

    One row per attack label (its first run with examples, the lowest seed);
    ``per_attack`` examples side by side, each as clean / triggered /
    :math:`|x' - x|` (scaled to its own maximum, printed above it).
    """
    runs = results.runs
    if not results.trigger_examples or "attack_label" not in runs:
        return None
    chosen: dict[str, str] = {}
    order = runs.sort_values("seed", kind="stable") if "seed" in runs else runs
    for key, label in zip(order["key"], order["attack_label"], strict=True):
        if key in results.trigger_examples and label not in chosen:
            chosen[label] = key
    labels = [lab for lab in _order(runs["attack_label"]) if lab in chosen]
    if not labels:
        return None
    cols = 3 * per_attack
    fig, axes = plt.subplots(len(labels), cols, figsize=(TWO_COLUMNS, 1.25 * len(labels) + 0.3), squeeze=False)
    for r, label in enumerate(labels):
        ex = results.trigger_examples[chosen[label]]
        for j in range(per_attack):
            trio = axes[r, 3 * j : 3 * j + 3]
            for ax in trio:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
            if j >= len(ex["clean"]):
                for ax in trio:
                    ax.set_visible(False)
                continue
            clean, triggered = ex["clean"][j], ex["triggered"][j]
            diff = np.abs(triggered - clean)
            peak = float(diff.max())
            lo = float(min(clean.min(), triggered.min()))
            hi = float(max(clean.max(), triggered.max()))
            grey = clean.ndim < 3 or clean.shape[0] == 1
            kw: dict[str, Any] = {"cmap": "gray", "vmin": lo, "vmax": hi} if grey else {}
            img_c, img_t = as_image(clean), as_image(triggered)
            if not grey:
                img_c, img_t = (img_c - lo) / max(hi - lo, 1e-12), (img_t - lo) / max(hi - lo, 1e-12)
            trio[0].imshow(img_c, **kw)
            trio[1].imshow(img_t, **kw)
            d = as_image(diff if grey else diff.max(axis=0, keepdims=True))
            trio[2].imshow(d, cmap="magma", vmin=0.0, vmax=peak if peak > 0 else 1.0)
            trio[0].set_title("clean", fontsize=6)
            trio[1].set_title("triggered", fontsize=6)
            trio[2].set_title(f"|diff| (max {peak:.3g})", fontsize=6)
        axes[r, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    caption = ("Trigger examples: test inputs of classes other than the target, clean, with the attacker's "
               "final trigger (a learned trigger as last optimised), and the absolute difference, scaled to "
               "its maximum (printed). One row per backdoor attack, from its run with the lowest seed.")
    return _save(fig, folder, "trigger_examples", "Trigger examples", caption)


#: The report's figures, in order.
FIGURES: tuple[Callable[[Results, Path], FigureFile | None], ...] = (
    accuracy_vs_round, asr_vs_round, heatmap_final_accuracy, accuracy_vs_fraction, accuracy_vs_alpha,
    accuracy_vs_clients, detection, trigger_examples,
)


def make_figures(results: Results, folder: str | Path) -> list[FigureFile]:
    """Write every figure the results can show into ``folder``; return them in report order."""
    out = []
    with paper_style():
        for fn in FIGURES:
            fig = fn(results, Path(folder))
            if fig is not None:
                out.append(fig)
    return out
