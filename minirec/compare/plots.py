"""Figures for the comparison report, drawn with matplotlib's Agg canvas (no display, no pyplot state).

    python -m minirec.compare --paper table1   # writes ours_vs_paper.png and levels_<Category>.png

- ``ours_vs_paper.png``: per category, grouped bars per Table 1 metric: each stage with its 95% CI as error
  bars, next to the paper's MiniOneRec number and the best of the paper's other methods on that metric.
- ``levels_<Category>.png``: per stage, the per-SID-level retention across K (docs/upstream.md 6.6, a harness
  extension): share with the right level-1 code, then the share of those keeping level 2, then level 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from minirec.compare import PAPER_METHOD, ScoredRun, best_baseline, paper_metrics

PAPER_COLOUR = "#4d4d4d"
BASELINE_COLOUR = "#b3b3b3"


def level_label(level: int) -> str:
    """Legend text for drop-off entry ``level`` (0-based): L1 is a share of all rows, deeper ones a retention."""
    if level == 0:
        return "L1: right level-1 code"
    return f"L{level + 1} kept given " + ("L1" if level == 1 else f"L1-{level}")


def plot_ours_vs_paper(ranked: pd.DataFrame, paper: pd.DataFrame, path: Path) -> Path:
    """Grouped bars per metric, one panel per category; returns ``path``."""
    categories = sorted(ranked["category"].unique())
    figure = Figure(figsize=(7.5 * len(categories), 6.0), layout="constrained")
    axes = figure.subplots(1, len(categories), squeeze=False)[0]
    for axis, category in zip(axes, categories):
        _bars_for_category(axis, ranked[ranked["category"] == category], paper, category)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=9)
    figure.suptitle("Ours vs the paper's Table 1 (error bars: our 95% bootstrap CI)", fontsize=13)
    figure.savefig(path, dpi=110)
    return path


def _bars_for_category(axis, rows: pd.DataFrame, paper: pd.DataFrame, category: str) -> None:
    metrics = paper_metrics(paper, category)
    reference = rows.drop_duplicates("metric").set_index("metric")["paper"].reindex(metrics).to_numpy()
    baselines = [best_baseline(paper, category, metric) for metric in metrics]
    # (legend label, values, CI half-widths or None, text above each bar, colour)
    series = [
        (f"paper {PAPER_METHOD}", reference, None, [f"{v:.3f}" for v in reference], PAPER_COLOUR),
        ("best paper baseline", np.array([v for _, v in baselines]), None,
         [f"{v:.3f} {method}" for method, v in baselines], BASELINE_COLOUR),
    ]
    for stage in dict.fromkeys(rows["stage"]):
        ours = rows[rows["stage"] == stage].set_index("metric").reindex(metrics)
        errors = np.vstack([ours["ours"] - ours["ci_low"], ours["ci_high"] - ours["ours"]])
        series.append((f"ours: {stage}", ours["ours"].to_numpy(), np.nan_to_num(errors),
                       [f"{v:.3f}" for v in ours["ours"]], None))
    positions = np.arange(len(metrics))
    width = 0.8 / len(series)
    tops = []
    for index, (label, values, errors, texts, colour) in enumerate(series):
        offsets = positions - 0.4 + width * (index + 0.5)
        axis.bar(offsets, values, width, yerr=errors, capsize=2, label=label, color=colour,
                 hatch="//" if colour == BASELINE_COLOUR else None, edgecolor="white")
        top = values + (errors[1] if errors is not None else 0)
        for x, y, text in zip(offsets, top, texts):
            axis.annotate(text, (x, np.nan_to_num(y)), xytext=(0, 3), textcoords="offset points", rotation=90,
                          fontsize=7, ha="center", va="bottom")
        tops.append(np.nanmax(top))
    axis.set_xticks(positions, metrics)
    axis.set_xlabel("Table 1 metric")
    axis.set_ylabel("score (HR: share of test rows; NDCG)")
    axis.set_title(category)
    axis.set_ylim(0, max(tops) * 1.3)
    axis.grid(axis="y", alpha=0.3)


def plot_level_dropoff(runs: Sequence[ScoredRun], path: Path) -> Path:
    """Retention per SID level across K, one panel per stage of one category; returns ``path``."""
    figure = Figure(figsize=(5.0 * len(runs), 4.5), layout="constrained")
    axes = figure.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for axis, run in zip(axes, runs):
        ks = sorted(run.levels.get("dropoff", {}), key=int)
        retention = np.array([run.levels["dropoff"][k] for k in ks], dtype=float).reshape(len(ks), -1)
        for level in range(retention.shape[1]):
            axis.plot(range(len(ks)), retention[:, level], marker="o", label=level_label(level))
            # Neighbouring levels label on opposite sides, so close lines keep readable values.
            offset, align = ((0, 5), "bottom") if level % 2 == 0 else ((0, -6), "top")
            for x, y in enumerate(retention[:, level]):
                axis.annotate(f"{y:.2f}", (x, y), xytext=offset, textcoords="offset points", fontsize=7,
                              ha="center", va=align, color=axis.lines[-1].get_color())
        axis.set_xticks(range(len(ks)), ks)
        axis.set_xlabel("K (top-K beams)")
        axis.set_title(f"{run.stage} ({run.num_beams} beams)")
        axis.set_ylim(-0.05, 1.12)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("share kept at this level")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=9)
    figure.suptitle(f"{runs[0].category}: where hits are lost, level by level (SID levels)", fontsize=12)
    figure.savefig(path, dpi=110)
    return path
