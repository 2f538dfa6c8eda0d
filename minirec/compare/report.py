"""The comparison report: ``report.md`` generated from scored runs, never edited by hand.

    python -m minirec.compare --paper table1 --out reports/latest   # writes report.md beside comparison.csv

For each category: a box saying what was run (preset, model size and initialisation, train rows used, steps,
beams, rows scored) and what that implies, once; a few computed sentences answering "how far are we from Table 1,
and where do we lose it?"; GRPO minus SFT on the same rows with a paired interval; the training-health facts of
each model stage, with a plain warning when a stage could not have changed the model; every stage's HR, HR_coll
and NDCG at each K with 95% bootstrap CIs, all on the same rows (:mod:`minirec.compare.rows`); the Table 1
comparison; the Table 1 methods we trained and what their loss on our data says about ours ("where the gap comes
from"); and the per-SID-level tables (a harness extension, docs/upstream.md 6.6). Then one table across datasets.
The header names the runs (each linked to the MLflow UI), the git commit, the date and, per run, the train file
behind its numbers (relative to the data directory) and the upstream profile it ran under.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from minirec.compare import PAPER_METHOD, ScoredRun, best_baseline, ordinal

HEADLINE_METRIC = "HR@10"
UPSTREAM_BEAMS = 50  # upstream evaluate.sh decodes 50 beams (docs/upstream.md 6.1); Table 1's top-10 comes from them


# Official train rows (data/README.md): what a partial split is a share of.
OFFICIAL_TRAIN_ROWS = {"Industrial_and_Scientific": 36_257, "Office_Products": 38_925}


@dataclass
class Context:
    """What the report knows beyond the scores: per run id its lineage and health, per category the GRPO-minus-SFT
    paired differences, the UI address, and the paper rows of the baselines we trained."""

    lineages: dict = field(default_factory=dict)  # run id -> minirec.compare.lineage.Lineage
    health: dict = field(default_factory=dict)  # run id -> Health
    differences: dict = field(default_factory=dict)  # category -> {metric: (mean, low, high, rows)}
    ui_base: str = "http://127.0.0.1:5000"

    def link(self, run: ScoredRun) -> str:
        return f"[`{run.run_id[:8]}`]({run_link(self.ui_base, run.experiment_id, run.run_id)})"


# MLflow 3.17's UI opens experiments in its GenAI view unless asked for the model-training one.
UI_VIEW = "workflowType=machine_learning"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW}"


def compare_link(base: str, runs: Sequence[ScoredRun]) -> str:
    """MLflow's compare-runs view of exactly these runs."""
    import json

    ids = json.dumps([run.run_id for run in runs], separators=(",", ":"))
    experiments = json.dumps(sorted({run.experiment_id for run in runs}), separators=(",", ":"))
    return f"{base}/#/compare-runs?runs={ids}&experiments={experiments}&{UI_VIEW}"


def without_machine_paths(text: str) -> str:
    """The project's paths relative to it and any other absolute path reduced to its last part."""
    import re

    from minirec.data.layout import PROJECT_ROOT

    text = text.replace(str(PROJECT_ROOT) + "/", "")
    parts = re.split(r"(https?://[^\s)]+)", text)  # links to the MLflow UI keep their paths
    return "".join(part if part.startswith("http") else
                   re.sub(r"(?<![\w.:/])/(?:[^\s/`'\"()]+/)+([^\s/`'\"()]+)", r"…/\1", part) for part in parts)


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
    """One sentence per category and partial train file (not one per run), and one per run with no train file."""
    warnings = []
    partial: dict[tuple[str, str, int | None], list[str]] = {}
    for run in runs:
        prov = run.provenance
        if prov.recorded and prov.train_is_partial:
            partial.setdefault((run.category, prov.train_path, prov.train_rows), []).append(run.stage)
        elif not prov.recorded:
            who = f"{run.category} / {run.stage} (run {run.run_id})"
            warnings.append(f"{who}: the train file behind these numbers is {prov.note or 'not recorded'}.")
    for (category, path, rows), stages in partial.items():
        count = f"{rows:,} rows" if rows is not None else "row count not recorded"
        warnings.insert(0, f"{category}: {', '.join(stages)} {'was' if len(stages) == 1 else 'were'} trained on the "
                           f"PARTIAL train split `{Path(path).name}` ({count}), not the official one: none of them can "
                           "be expected to reach the paper's numbers.")
    return warnings


# --- header -------------------------------------------------------------------------------------------------


def header_section(runs: Sequence[ScoredRun], stamp: Stamp, context: Context) -> str:
    lines = [
        f"# minirec against the paper ({stamp.paper_name})",
        "",
        f"Generated {stamp.generated_at} by `{without_machine_paths(stamp.command)}` at git commit "
        f"`{stamp.commit}`. Paper numbers: the {PAPER_METHOD} row of `{stamp.paper_path.name}`; places are among "
        "the paper's methods plus ours.",
        "",
        "Compared runs: " + ", ".join(f"`{run.run_id}`" for run in runs) + f" ([open them side by side in the MLflow "
        f"UI]({compare_link(context.ui_base, runs)})).",
    ]
    warnings = provenance_warnings(runs)
    if warnings:
        lines += ["", "\n>\n".join(f"> **Warning:** {warning}" for warning in warnings)]
    rows = []
    for run in runs:
        prov = run.provenance
        rows.append([
            run.category, run.stage, context.link(run), run.experiment, run.status, started(run),
            run.num_beams or "n/a", run.rows or run.metrics.get("n", "n/a"),
            f"`{prov.train_path}`" if prov.recorded else "not recorded",
            f"{prov.train_rows:,}" if prov.train_rows is not None else "n/a",
            partial_cell(prov), f"`{prov.train_sha256[:12]}`" if prov.train_sha256 else "n/a",
            run.params.get("upstream.profile") or run.tags.get("upstream.profile") or "none",
        ])
    header = ["category", "stage", "run", "experiment", "status", "started", "beams", "rows scored",
              "train file (in the data directory)", "train rows", "partial", "train sha256", "upstream profile"]
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
    """HR, HR_coll and NDCG at every K any stage logged (CIs for HR and NDCG); rows = metric, columns = stage.

    HR_coll@K counts a hit on a SID that m items share as 1/m: where it is far below HR@K, hits land on SIDs
    that do not single out the item (docs/upstream.md 1.6)."""
    ks = sorted({k for run in runs for k in run.ks})
    metrics = [f"{name}@{k}" for k in ks for name in ("HR", "HR_coll")] + [f"NDCG@{k}" for k in ks]
    rows = [[metric, *[fmt(run.value(metric)) if metric.startswith("HR_coll") else with_ci(run, metric)
                       for run in runs]] for metric in metrics]
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


def what_was_run_box(category: str, runs: Sequence[ScoredRun], context: Context) -> str:
    """Once per category: what produced the numbers and what that implies."""
    from minirec.compare.lineage import what_was_run

    found = [context.lineages[run.run_id] for run in runs if run.run_id in context.lineages]
    lines = what_was_run(found)
    scored = "; ".join(f"{run.stage}: {run.rows or str(run.metrics.get('n', '?')) + ' rows'}, "
                       f"{run.num_beams or '?'} beams" for run in runs)
    lines.append(f"Scored: {scored}.")
    partial = [run.provenance for run in runs if run.provenance.train_is_partial]
    if partial and partial[0].train_rows:
        official = OFFICIAL_TRAIN_ROWS.get(category)
        share = f", {100 * partial[0].train_rows / official:.1f}% of the official {official:,}" if official else ""
        lines.append(f"Train split: the PARTIAL one ({partial[0].train_rows:,} rows{share}).")
    tiny = any(f.sft_run is not None and f.sft_run.data.params.get("model") == "tiny" for f in found)
    if tiny:
        implication = ("the tiny preset checks that every stage runs end to end on CPU. A randomly initialised model "
                       "of well under a million parameters is not MiniOneRec's Qwen2.5-1.5B: gaps to Table 1 below "
                       "measure this preset (and the partial data), not the method.")
    elif partial:
        implication = ("the models were trained on the partial train split: they cannot be expected to reach the "
                       "paper's numbers; compare with the baselines' loss on the same split (below).")
    else:
        implication = "these runs use the paper's setting as far as the harness records it."
    lines.append(f"**What this implies:** {implication}")
    return "\n".join(f"> {line}" + ("\n>" if n < len(lines) - 1 else "") for n, line in enumerate(lines))


def difference_section(category: str, context: Context) -> str | None:
    differences = context.differences.get(category)
    if not differences:
        return None
    sentences = []
    for metric, (mean, low, high, rows) in differences.items():
        if low > 0:
            verdict = "GRPO is better than SFT beyond sampling noise"
        elif high < 0:
            verdict = "GRPO is worse than SFT beyond sampling noise"
        else:
            verdict = "the interval contains zero: no difference can be told from sampling noise"
        sentences.append(f"GRPO minus SFT, {metric}: {mean:+.4f} [{low:+.4f}, {high:+.4f}] over the same {rows:,} "
                         f"rows (95% paired user bootstrap): {verdict}.")
    return " ".join(sentences)


def health_section(runs: Sequence[ScoredRun], context: Context) -> str | None:
    entries = [context.health[run.run_id] for run in runs if context.health.get(run.run_id) is not None]
    if not entries:
        return None
    parts = []
    for health in entries:
        parts += [f"**{health.stage}**: " + "; ".join(f"{name} {value}" for name, value in health.facts.items()) + "."]
    warnings = [warning for health in entries for warning in health.warnings]
    parts += [f"> **Warning:** {warning}" for warning in warnings]
    return "\n\n".join(parts)


PAPER_METHOD_TAG = "paper_method"


def trained_baselines(category: str, runs: Sequence[ScoredRun], paper: pd.DataFrame) -> list[tuple[ScoredRun, str]]:
    """Our runs of Table 1's other methods: ``(run, paper method)``, by the run's ``paper_method`` tag or stage."""
    methods = {name.lower(): name for name in paper.loc[paper["category"] == category, "method"].unique()
               if name != PAPER_METHOD}
    found = []
    for run in runs:
        name = run.tags.get(PAPER_METHOD_TAG) or methods.get(run.stage.split("@")[0].lower())
        if name in methods.values():
            found.append((run, name))
    return found


def ratio_text(run: ScoredRun, reference: float, metric: str) -> str:
    low, high = run.ci(metric)
    interval = f" [{100 * low / reference:.0f}%, {100 * high / reference:.0f}%]" if not math.isnan(low) else ""
    return f"{100 * run.value(metric) / reference:.0f}%{interval}"


def baselines_section(category: str, runs: Sequence[ScoredRun], paper: pd.DataFrame) -> str | None:
    found = trained_baselines(category, runs, paper)
    if not found:
        return None
    rows = []
    for run, method in found:
        cells = [method, run.stage]
        for metric in (HEADLINE_METRIC, "NDCG@10"):
            reference = paper_value_of(paper, category, metric, method)
            cells += [with_ci(run, metric), fmt(reference), ratio_text(run, reference, metric)]
        rows.append(cells)
    header = ["Table 1 method", "our stage", "ours HR@10 (95% CI)", "paper HR@10", "ours / paper",
              "ours NDCG@10 (95% CI)", "paper NDCG@10", "ours / paper"]
    return table(header, rows)


def paper_value_of(paper: pd.DataFrame, category: str, metric: str, method: str) -> float:
    from minirec.compare import paper_value

    return paper_value(paper, category, metric, method)


def gap_attribution(category: str, runs: Sequence[ScoredRun], paper: pd.DataFrame, context: Context) -> str | None:
    """How much of the gap the data explains: the baselines' ours/paper ratios on our train split against
    MiniOneRec's (its best model stage)."""
    found = trained_baselines(category, runs, paper)
    models = [run for run in runs if run.stage.split("@")[0] in ("sft", "grpo") and not math.isnan(run.value(HEADLINE_METRIC))]
    if not found or not models:
        return None
    ratios = sorted((run.value(HEADLINE_METRIC) / paper_value_of(paper, category, HEADLINE_METRIC, method), method)
                    for run, method in found)
    best = max(models, key=lambda run: run.value(HEADLINE_METRIC))
    ours = best.value(HEADLINE_METRIC) / paper_value_of(paper, category, HEADLINE_METRIC, PAPER_METHOD)
    low, high = (bound / paper_value_of(paper, category, HEADLINE_METRIC, PAPER_METHOD) for bound in best.ci(HEADLINE_METRIC))
    spread = (f"{100 * ratios[0][0]:.0f}% ({ratios[0][1]}) to {100 * ratios[-1][0]:.0f}% ({ratios[-1][1]})"
              if len(ratios) > 1 else f"{100 * ratios[0][0]:.0f}% ({ratios[0][1]})")
    text = (f"On this data the Table 1 baselines we trained keep {spread} of their paper {HEADLINE_METRIC}: that is "
            f"what the data (and our training of them) costs a method. MiniOneRec's best stage here, {best.stage}, "
            f"keeps {100 * ours:.0f}% [{100 * low:.0f}%, {100 * high:.0f}%] of the paper's {PAPER_METHOD} "
            f"{HEADLINE_METRIC}. ")
    if low > ratios[-1][0]:
        text += "That is more than any baseline keeps: the data explains all of the gap and more."
    elif high < ratios[0][0]:
        text += "That is less than any baseline keeps: the data explains part of the gap, not all of it."
    else:
        text += "That lies within the baselines' range: the data alone can explain the gap."
    tiny = any(f.sft_run is not None and f.sft_run.data.params.get("model") == "tiny"
               for f in (context.lineages.get(best.run_id),) if f is not None)
    if tiny:
        text += (" But this MiniOneRec stage is the tiny preset's stand-in model, not Qwen2.5-1.5B, so its share "
                 "measures the preset, not the method.")
    return text


def category_section(category: str, runs: Sequence[ScoredRun], ranked: pd.DataFrame, paper: pd.DataFrame,
                     plot: str | None, context: Context) -> str:
    parts = [f"## {category}", "", "### What was run", "", what_was_run_box(category, runs, context),
             "", "### How far from Table 1", "", category_summary(category, runs, ranked, paper)]
    difference = difference_section(category, context)
    if difference:
        parts += ["", "### GRPO minus SFT", "", difference]
    health = health_section(runs, context)
    if health:
        parts += ["", "### Training health", "", health]
    parts += ["", "### Results per stage (HR, HR_coll and NDCG, 95% bootstrap CI)", "",
              f"Every stage on the same rows: {runs[0].rows or 'as logged'}.", "", results_table(runs)]
    if category in set(ranked["category"]):
        parts += ["", "### Against Table 1", "", paper_table(category, ranked)]
    baselines = baselines_section(category, runs, paper)
    if baselines:
        parts += ["", "### Table 1 methods trained here", "", baselines]
    gap = gap_attribution(category, runs, paper, context)
    if gap:
        parts += ["", "### Where the gap comes from", "", gap]
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
                  plots: dict[str, str], context: Context | None = None) -> str:
    """The whole ``report.md``; ``plots`` maps a category (``all``: the cross-dataset figure) to a figure file
    beside the report."""
    context = context or Context()
    sections = [header_section(runs, stamp, context)]
    for category in sorted({run.category for run in runs}):
        category_runs = [run for run in runs if run.category == category]
        sections.append(category_section(category, category_runs, ranked, paper, plots.get(category), context))
    if not ranked.empty:
        sections.append(cross_dataset_section(ranked, plots.get("all")))
    # Presets given as files, data directories: a report is shared, the machine's folders mean nothing there.
    return without_machine_paths("\n\n".join(sections)) + "\n"

