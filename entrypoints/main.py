"""The whole reproduction in one command: every stage per category, then the comparison with the paper.

    mlflow run . -e main -P category=all -P preset=tiny --env-manager local      (what `make run` does)
    mlflow run . -e main -P category=all -P preset=paper -P num_gpus=8 -P data_dir=/data/amazon18 --env-manager local
    python -m entrypoints.main --category Industrial_and_Scientific --force sft

Per category: data validation -> (optional ``sids``) -> baselines -> sft -> evaluate(sft) -> grpo ->
evaluate(grpo), each stage a child of a ``pipeline`` run in the category's experiment and each taking its inputs
from the previous stage's run; then one comparison of every category against Table 1 (``minirec-comparison``).
A stage whose finished run has the same parameters, inputs, code version and data digests is reused
(``--force STAGE`` recomputes from that stage on); an interrupted SFT or GRPO run resumes from its last
checkpoint. The report is printed last, with its path and the command that opens the MLflow UI.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from minirec.data import CATEGORIES, locate
from minirec.data.layout import PROJECT_ROOT, sha256_of
from minirec.pipeline import Outcome, Step, code_version, run_or_reuse, run_step, stage_key
from minirec.tracking import (
    configure_environment,
    ensure_experiment,
    experiment_name,
    git_commit,
    log_params,
    start_run,
)

STAGES = ("data", "sids", "popularity", "transition", "sft", "evaluate_sft", "grpo", "evaluate_grpo")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="all", help="a category, or 'all' (default)")
    parser.add_argument("--preset", default="tiny", help="configs/main/<preset>.yaml (tiny, the default, or paper) "
                        "or a YAML path")
    parser.add_argument("--data-dir", "--data_dir", default="", help="upstream-layout data directory (default: bundled)")
    parser.add_argument("--sids", default="", help="rebuild SIDs first with this method (rqkmeans, "
                        "rqkmeans_constrained, rqvae) and run every later stage on them (default: official SIDs)")
    parser.add_argument("--num-gpus", "--num_gpus", default="", help="GPUs for sft, grpo and evaluate (default: preset's)")
    parser.add_argument("--force", default="", choices=("", *STAGES), help="recompute from this stage on")
    parser.add_argument("--out", default="reports/latest", help="where the comparison report goes")
    return parser.parse_args(argv)


def load_preset(name: str) -> dict:
    """``configs/main/<name>.yaml``, or a YAML file given by path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROJECT_ROOT / "configs" / "main" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"unknown preset {name!r}; known: {', '.join(known)}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class CategoryPipeline:
    """Runs (or reuses) the stages of one category under its pipeline run."""

    def __init__(self, category: str, args: argparse.Namespace, preset: dict, parent_run_id: str):
        self.category, self.args, self.preset, self.parent = category, args, preset, parent_run_id
        self.data_dir = args.data_dir or ""
        self.version = code_version()
        self.forcing = False
        self.outcomes: dict[str, Outcome] = {}

    def data_digests(self) -> dict[str, str]:
        files = locate(self.category, self.data_dir or None)
        return {role: sha256_of(path) for role, path in files.all_files().items()}

    def run(self, step: Step) -> Outcome:
        self.forcing = self.forcing or step.name == self.args.force
        key = stage_key(step, self.category, self.data_digests(), self.version)
        outcome = run_or_reuse(step, key, self.parent, force=self.forcing)
        self.outcomes[step.name] = outcome
        import mlflow

        client = mlflow.MlflowClient()
        client.log_metric(self.parent, f"seconds_{step.name}", outcome.seconds)
        client.set_tag(self.parent, f"run.{step.name}", outcome.run_id)
        return outcome

    def data_args(self) -> tuple[str, ...]:
        return ("--data-dir", self.data_dir) if self.data_dir else ()

    def run_all(self) -> list[str]:
        """Every stage in order; returns the scored run ids (baselines and model evaluations)."""
        category, gpus = self.category, self.args.num_gpus
        self.run(Step("data", "data", ("validate", "--category", category, *self.data_args())))
        if self.args.sids:
            out = PROJECT_ROOT / "outputs" / "sids" / f"main-{self.args.sids}"
            self.run(Step("sids", "sids", ("--category", category, "--method", self.args.sids, "--out", str(out),
                                           *self.data_args())))
            self.data_dir = str(out)
        scored = [self.run(Step(method, "baselines", ("--category", category, "--method", method,
                                                       *self.data_args()))).run_id
                  for method in ("popularity", "transition")]
        gpu_args = ("--num_gpus", gpus) if gpus else ()
        sft = self.run(Step("sft", "sft", ("--preset", self.preset["sft_preset"], "--category", category,
                                           *gpu_args, *self.data_args()), resumable=True))
        scored.append(self.evaluate("evaluate_sft", sft.run_id, "sft"))
        grpo = self.run(Step("grpo", "grpo", ("--preset", self.preset["grpo_preset"], "--category", category,
                                              "--model", sft.run_id, *gpu_args, *self.data_args()), resumable=True))
        scored.append(self.evaluate("evaluate_grpo", grpo.run_id, "grpo"))
        return scored

    def evaluate(self, name: str, model_run_id: str, label: str) -> str:
        settings = self.preset["evaluate"]
        args = ("--model", model_run_id, "--category", self.category, "--stage", label,
                "--num-beams", str(settings["num_beams"]), "--batch-size", str(settings["batch_size"]),
                "--limit", str(settings["limit"]), *self.data_args())
        processes = int(self.args.num_gpus or 1)
        return self.run(Step(name, "evaluate", args, processes=processes)).run_id


def run_category(category: str, args: argparse.Namespace, preset: dict, driver_run_id: str) -> list[str]:
    """Run every stage of one category as children of a ``pipeline`` run in the category's experiment."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.create_run(
        ensure_experiment(experiment_name(category)),
        run_name=f"pipeline-{args.preset}",
        tags={"category": category, "stage": "pipeline", "source": args.preset, "entry_point": "main",
              "git_commit": git_commit(), "mlflow.parentRunId": driver_run_id},
    )
    status = "FAILED"
    try:
        scored = CategoryPipeline(category, args, preset, parent.info.run_id).run_all()
        status = "FINISHED"
    finally:
        client.set_terminated(parent.info.run_id, status)
    return scored


def main(argv=None) -> Path:
    args = parse_args(argv)
    configure_environment()
    preset = load_preset(args.preset)
    categories = list(CATEGORIES) if args.category == "all" else [args.category]
    if any(category not in CATEGORIES for category in categories):
        raise SystemExit(f"unknown category {args.category!r}; expected one of {', '.join(CATEGORIES)} or 'all'")

    # Under `mlflow run` this joins the run it opened for `main`; stage processes never see its id.
    with start_run(category="all", stage="main", source=args.preset, entry_point="main",
                   run_name=f"main-{args.preset}") as driver:
        import mlflow

        log_params({"category": args.category, "preset": args.preset, "data_dir": args.data_dir or "bundled",
                    "sids": args.sids or "official", "force": args.force or "none"})
        scored = [run_id for category in categories
                  for run_id in run_category(category, args, preset, driver.info.run_id)]
        out = Path(args.out)
        run_step(Step("compare", "compare", ("--paper", "table1", "--category", args.category,
                                             "--out", str(out), "--run-ids", *scored)), driver.info.run_id)
        report = out / "report.md"
        mlflow.log_artifacts(str(out), "report")

    print("\n" + report.read_text(encoding="utf-8"))
    print(f"Report: {report.resolve()}")
    uri = os.environ["MLFLOW_TRACKING_URI"]
    print(f"Runs:   {uri}" if uri.startswith("http") else f"Runs:   mlflow ui --backend-store-uri {uri}")
    return report


if __name__ == "__main__":
    main()
