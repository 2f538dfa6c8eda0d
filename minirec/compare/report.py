"""The comparison report: ``report.md`` generated from scored runs, never edited by hand.

    python -m minirec.compare --paper table1 --out reports/latest   # writes report.md beside comparison.csv

For each category: a few computed sentences answering "how far are we from Table 1, and where do we lose it?",
every stage's HR/NDCG at each K with its 95% bootstrap CI, the Table 1 comparison (gap, relative %, whether the
paper's number lies inside our CI, the place among the paper's methods), and the per-SID-level tables (a harness
extension, docs/upstream.md 6.6); then one table across datasets. The header names the runs, the git commit, the
date and the train file behind every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from minirec.compare import PAPER_METHOD, ScoredRun, best_baseline, ordinal

HEADLINE_METRIC = "HR@10"
UPSTREAM_BEAMS = 50  # upstream evaluate.sh decodes 50 beams (docs/upstream.md 6.1); Table 1's top-10 comes from them


@dataclass(frozen=True)
class Stamp:
    """What made the report: the command line, git commit, UTC time and the paper table used."""

    command: str
    commit: str
    generated_at: str
    paper_name: str
    paper_path: Path


def fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def with_ci(run: ScoredRun, metric: str) -> str:
    low, high = run.ci(metric)
    interval = f" [{fmt(low)}, {fmt(high)}]" if not math.isnan(low) else ""
    return fmt(run.value(metric)) + interval


def place(row) -> str:
    return "n/a" if math.isnan(row.paper_place) else f"{ordinal(int(row.paper_place))} of {int(row.field_size)}"


def ci_position(row) -> str:
    if math.isnan(row.ci_low):
        return "no CI"
    if row.paper_in_ci:
        return "inside"
    return "above" if row.paper > row.ci_high else "below"


def started(run: ScoredRun) -> str:
    return datetime.fromtimestamp(run.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def partial_cell(prov) -> str:
    """``yes``/``no``/``unknown``: whether the recorded train file is the partial split."""
    return {True: "**yes**", False: "no", None: "unknown"}[prov.train_is_partial]


def provenance_warnings(runs: Sequence[ScoredRun]) -> list[str]:
    """Plain sentences for every run trained on the partial split or with no train file recorded."""
    warnings = []
    for run in runs:
        prov = run.provenance
        who = f"{run.category} / {run.stage} (run {run.run_id})"
        if prov.recorded and prov.train_is_partial:
            rows = f"{prov.train_rows:,} rows" if prov.train_rows is not None else "row count not recorded"
            warnings.append(
                f"{who} was trained on the PARTIAL train split `{Path(prov.train_path).name}` ({rows}), not the "
                "official one: it cannot be expected to reach the paper's numbers."
            )
        elif not prov.recorded:
            warnings.append(f"{who}: the train file behind these numbers is {prov.note or 'not recorded'}.")
    return warnings


# --- header -------------------------------------------------------------------------------------------------


def header_section(runs: Sequence[ScoredRun], stamp: Stamp) -> str:
    lines = [
        f"# minirec against the paper ({stamp.paper_name})",
        "",
        f"Generated {stamp.generated_at} by `{stamp.command}` at git commit `{stamp.commit}`. Paper numbers: the "
        f"{PAPER_METHOD} row of `{stamp.paper_path.name}`; places are among the paper's methods plus ours.",
        "",
        "Compared runs: " + ", ".join(f"`{run.run_id}`" for run in runs) + ".",
    ]
    warnings = provenance_warnings(runs)
    if warnings:
        lines += ["", "\n>\n".join(f"> **Warning:** {warning}" for warning in warnings)]
    rows = []
    for run in runs:
        prov = run.provenance
        rows.append(
            [
                run.category, run.stage, f"`{run.run_id}`", run.experiment, run.status, started(run),
                run.num_beams or "n/a", run.metrics.get("n", "n/a"),
                f"`{prov.train_path}`" if prov.recorded else "not recorded",
                f"{prov.train_rows:,}" if prov.train_rows is not None else "n/a",
                partial_cell(prov), f"`{prov.train_sha256[:12]}`" if prov.train_sha256 else "n/a",
            ]
        )
    header = ["category", "stage", "run", "experiment", "status", "started", "beams", "rows scored", "train file",
              "train rows", "partial", "train sha256"]
    return "\n".join(lines) + "\n\n## Runs and data provenance\n\n" + table(header, rows)


# --- per category -------------------------------------------------------------------------------------------


def level_k(run: ScoredRun) -> str | None:
    """The K whose per-level figures explain the headline: 10 when decoded, else the largest available."""
    keys = sorted(run.levels.get("cumulative", {}), key=int)
    if not keys:
        return None
    return "10" if "10" in keys else keys[-1]


def level_sentence(run: ScoredRun) -> str | None:
    """Where the top-K hits are lost, from the drop-off retention rates (L1, L2 given L1, L3 given L1-2, ...)."""
    k = level_k(run)
    if k is None:
        return None
    retention = run.levels["dropoff"][k]
    kept = [f"{100 * retention[0]:.1f}% of test rows have the right level-1 code in their top-{k}"]
    kept += [f"{100 * value:.1f}% of those keep level {level}" for level, value in enumerate(retention[1:], start=2)]
    weakest = 1 + min(range(len(retention)), key=lambda index: retention[index])
    text = f"Where {run.stage} loses it: " + ", then ".join(kept) + "."
    text += f" Level {weakest} loses the most ({100 * (1 - retention[weakest - 1]):.1f}% of the rows still in play)"
    if weakest == 1 and len(retention) > 1:
        deeper = 2 + min(range(len(retention) - 1), key=lambda index: retention[index + 1])
        text += f"; past level 1, level {deeper} loses the most ({100 * (1 - retention[deeper - 1]):.1f}%)"
    return text + "."


def category_summary(category: str, runs: Sequence[ScoredRun], ranked: pd.DataFrame, paper: pd.DataFrame) -> str:
    """A few sentences computed from the numbers: best stage, gap, place, CI, range of gaps, where it is lost."""
    rows = ranked[ranked["category"] == category]
    headline = rows[rows["metric"] == HEADLINE_METRIC].dropna(subset=["ours"])
    if headline.empty:
        return f"No stage of {category} has {HEADLINE_METRIC} to compare with the paper."
    best = headline.loc[headline["ours"].idxmax()]
    baseline, baseline_value = best_baseline(paper, category, HEADLINE_METRIC)
    ci_words = {
        "inside": "lies inside our 95% CI {ci}: the difference is within test-set sampling noise",
        "above": "lies above our 95% CI {ci}: the shortfall is beyond test-set sampling noise",
        "below": "lies below our 95% CI {ci}: we are ahead by more than test-set sampling noise",
        "no CI": "cannot be set against a CI (the run logged none)",
    }
    interval = f"[{fmt(best.ci_low)}, {fmt(best.ci_high)}]"
    sentences = [
        f"The best stage, **{best.stage}**, reaches {HEADLINE_METRIC} = {fmt(best.ours)} against the paper's "
        f"{fmt(best.paper)}: a gap of {best.gap:+.4f} ({pct(best.relative_pct)}), which would place it "
        f"{place(best)} among Table 1's methods (best baseline: {baseline}, {fmt(baseline_value)}). "
        f"The paper's number {ci_words[ci_position(best)].format(ci=interval)}."
    ]
    stage_rows = rows[rows["stage"] == best.stage].dropna(subset=["ours"])
    lowest = stage_rows.loc[stage_rows["relative_pct"].idxmin()]
    highest = stage_rows.loc[stage_rows["relative_pct"].idxmax()]
    inside = int(stage_rows["paper_in_ci"].sum())
    sentences.append(
        f"Over the {len(stage_rows)} Table 1 metrics, {best.stage}'s relative gap runs from "
        f"{pct(lowest.relative_pct)} ({lowest.metric}) to {pct(highest.relative_pct)} ({highest.metric}); "
        f"the paper's number lies inside our CI on {inside} of them."
    )
    if len(headline) > 1:
        ordered = headline.sort_values("ours", ascending=False)
        sentences.append(
            f"Stages by {HEADLINE_METRIC}: "
            + " > ".join(f"{row.stage} {fmt(row.ours)}" for row in ordered.itertuples()) + "."
        )
    run = next(run for run in runs if run.stage == best.stage)
    level_text = level_sentence(run)
    if level_text:
        sentences.append(level_text)
    if run.num_beams is not None and run.num_beams != UPSTREAM_BEAMS:
        sentences.append(
            f"{best.stage} was decoded with {run.num_beams} beams, Table 1 with {UPSTREAM_BEAMS}: beam width "
            "changes the top-10 itself."
        )
    return " ".join(sentences)


def results_table(runs: Sequence[ScoredRun]) -> str:
    """HR and NDCG at every K any stage logged, with 95% CIs; rows = metric, columns = stage."""
    ks = sorted({k for run in runs for k in run.ks})
    metrics = [f"{name}@{k}" for name in ("HR", "NDCG") for k in ks]
    rows = [[metric, *[with_ci(run, metric) for run in runs]] for metric in metrics]
    return table(["metric", *[f"{run.stage} (95% CI)" for run in runs]], rows)


def paper_table(category: str, ranked: pd.DataFrame) -> str:
    rows = [
        [
            row.stage, row.metric, fmt(row.paper), fmt(row.ours), f"[{fmt(row.ci_low)}, {fmt(row.ci_high)}]",
            f"{row.gap:+.4f}" if not math.isnan(row.gap) else "n/a", pct(row.relative_pct), ci_position(row),
            place(row),
        ]
        for row in ranked[ranked["category"] == category].itertuples()
    ]
    header = ["stage", "metric", "paper", "ours", "our 95% CI", "gap", "relative", "paper vs our CI", "place"]
    return table(header, rows)


def prefix(level: int) -> str:
    """Levels 1..level of a SID: ``L1``, ``L1-2``, ``L1-3``."""
    return "L1" if level == 1 else f"L1-{level}"


def levels_tables(run: ScoredRun) -> str:
    """Independent, cumulative and drop-off (retention) shares per K for one stage."""
    ks = sorted(run.levels.get("cumulative", {}), key=int)
    if not ks:
        return "No per-level figures logged."
    depth = range(1, len(run.levels["cumulative"][ks[0]]) + 1)
    header = ["K", *[f"indep. L{level}" for level in depth], *[f"cum. {prefix(level)}" for level in depth],
              "kept L1", *[f"kept L{level} given {prefix(level - 1)}" for level in depth[1:]]]
    rows = []
    for k in ks:
        values = run.levels["independent"][k] + run.levels["cumulative"][k] + run.levels["dropoff"][k]
        rows.append([k, *[fmt(value) for value in values]])
    return table(header, rows)


def figure(name: str | None, caption: str) -> list[str]:
    return ["", f"![{caption}]({name})"] if name else []


def category_section(category: str, runs: Sequence[ScoredRun], ranked: pd.DataFrame, paper: pd.DataFrame,
                     plot: str | None) -> str:
    parts = [f"## {category}", "", "### How far from Table 1", "", category_summary(category, runs, ranked, paper)]
    parts += ["", "### Results per stage (HR and NDCG, 95% bootstrap CI)", "", results_table(runs)]
    if category in set(ranked["category"]):
        parts += ["", "### Against Table 1", "", paper_table(category, ranked)]
    parts += ["", "### Per-level analysis (harness extension, not a paper metric)", "",
              "Independent: some top-K prediction has the target's token at that level. Cumulative: one top-K "
              "prediction matches levels 1..l. Kept: cumulative share at level l over level l-1 (retention)."]
    for run in runs:
        parts += ["", f"#### {run.stage}", "", levels_tables(run)]
    parts += figure(plot, f"{category}: per-level retention across K")
    return "\n".join(parts)


# --- across datasets ----------------------------------------------------------------------------------------


def cross_dataset_section(ranked: pd.DataFrame, plot: str | None) -> str:
    """One row per (stage, metric), ours / paper / relative gap / place per category, and a summary sentence."""
    categories = sorted(ranked["category"].unique())
    header = ["stage", "metric"] + [f"{c} {col}" for c in categories for col in ("ours", "paper", "relative", "place")]
    rows = []
    for (stage, metric), group in ranked.groupby(["stage", "metric"], sort=False):
        cells = [stage, metric]
        for category in categories:
            match = list(group[group["category"] == category].itertuples())
            if match:
                row = match[0]
                cells += [fmt(row.ours), fmt(row.paper), pct(row.relative_pct), place(row)]
            else:
                cells += ["-"] * 4
        rows.append(cells)
    mean_gap = ranked.groupby(["category", "stage"])["relative_pct"].mean()
    summary = "Mean relative gap over the Table 1 metrics: " + "; ".join(
        f"{category} / {stage} {pct(value)}" for (category, stage), value in mean_gap.items()
    ) + "."
    parts = ["## Across datasets", "", summary, "", table(header, rows)]
    return "\n".join(parts + figure(plot, "ours vs the paper per metric, with the best paper baseline"))


def render_report(runs: Sequence[ScoredRun], ranked: pd.DataFrame, paper: pd.DataFrame, stamp: Stamp,
                  plots: dict[str, str]) -> str:
    """The whole ``report.md``; ``plots`` maps a category (``all``: the cross-dataset figure) to a figure file
    beside the report."""
    sections = [header_section(runs, stamp)]
    for category in sorted({run.category for run in runs}):
        category_runs = [run for run in runs if run.category == category]
        sections.append(category_section(category, category_runs, ranked, paper, plots.get(category)))
    if not ranked.empty:
        sections.append(cross_dataset_section(ranked, plots.get("all")))
    return "\n\n".join(sections) + "\n"

