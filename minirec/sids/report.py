"""The human side of a sids run: ``sid_report.md`` (new vs official figures) and ``code_usage.png``.

    from minirec.sids.report import write_report, plot_code_usage
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from minirec.atomic import atomic_path, write_text

_ROWS = (
    ("items", "items"),
    ("distinct SIDs", "distinct_sids"),
    ("SID lengths (tokens: items)", "sid_length"),
    ("codes used per level", "codes_used"),
    ("max items per SID", "items_per_sid_max"),
    ("items per SID (size: SIDs)", "items_per_sid_hist"),
    ("collision groups / items", ("collision_groups", "collision_items")),
    ("base-path collision groups / items", ("base_collision_groups", "base_collision_items")),
    ("valid rows whose target collides", ("valid_colliding_targets", "valid_colliding_target_share")),
    ("test rows whose target collides", ("test_colliding_targets", "test_colliding_target_share")),
    ("fitted reconstruction MSE", "recon_mse_fitted"),
    ("method reconstruction MSE", "recon_mse_native"),
)


def _cell(stats: Mapping, key) -> str:
    if isinstance(key, tuple):
        first, second = (stats.get(k) for k in key)
        if first is None:
            return "-"
        return f"{first} ({second:.1%})" if isinstance(second, float) else f"{first} / {second}"
    value = stats.get(key)
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return " / ".join(str(v) for v in value)
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def render_report(title: str, settings: Mapping[str, object], new: Mapping, official: Mapping | None) -> str:
    lines = [f"# {title}", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in settings.items()]
    lines += ["", "| figure | new SIDs | official SIDs |", "| --- | --- | --- |"]
    lines += [f"| {label} | {_cell(new, key)} | {_cell(official or {}, key)} |" for label, key in _ROWS]
    lines += [
        "",
        "Collisions count items sharing a full SID; base-path collisions ignore a dedup token. Evaluation matches",
        "SID strings, so a prediction of a shared SID is a hit for every item carrying it. The fitted MSE replaces",
        "each level's code by the mean residual of its items, on the same embeddings for both columns.",
        "",
    ]
    return "\n".join(lines)


def write_report(path: str | Path, title: str, settings: Mapping[str, object], new: Mapping, official: Mapping | None) -> Path:
    return write_text(path, render_report(title, settings, new, official))


def plot_code_usage(path: str | Path, new: Sequence[Sequence[int]], official: Sequence[Sequence[int]] | None, title: str) -> Path:
    """One panel per level: items per code, codes sorted by frequency, new against official."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = max(len(new), len(official or []))
    figure, axes = plt.subplots(1, levels, figsize=(4 * levels, 3.2), squeeze=False)
    for level, axis in enumerate(axes[0]):
        for label, counts, style in (("new", new, "-"), ("official", official or [], "--")):
            if level < len(counts):
                axis.plot(range(1, len(counts[level]) + 1), counts[level], style, label=f"{label} ({len(counts[level])} codes)")
        axis.set_title(f"level {level + 1}")
        axis.set_xlabel("code rank")
        axis.set_yscale("log")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("items")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return Path(path)
