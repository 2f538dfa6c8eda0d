"""``main``: every stage per category, then the comparison with the paper, in one command.

    mlflow run . -e main -P category=all -P preset=tiny --env-manager local      (what `make run` does)
    mlflow run . -e main -P category=all -P preset=paper -P num_gpus=8 -P data_dir=/data/amazon18 --env-manager local
    python -m minirec.pipeline --category Industrial_and_Scientific --force sft

Per category: data validation -> (optional ``sids``) -> baselines (setting ``baselines``: by default the
floors popularity and transition, then SASRec, GRU4Rec and Caser with their CPU presets; HSTU and TIGER are
opt-in, ``--baselines ...,hstu,tiger:tiny``, and on in the paper preset) -> sft -> evaluate(sft) -> grpo ->
evaluate(grpo), each stage a child of a ``pipeline`` run in the category's experiment and each taking its
inputs from the previous stage's run by id (a sids run id is the later stages' ``data_dir``); then one
comparison of every category against Table 1 (``minirec-comparison``). Nothing is handed over through shared
folders: every run writes under ``outputs/<stage>/<category>/<run id>``. A stage whose finished run has the
same parameters, inputs, code version and data digests is reused (``--force STAGE`` recomputes from that stage
on); an interrupted SFT or GRPO run resumes from its last checkpoint. The report is printed last, with its
path and the command that opens the MLflow UI.
"""

from __future__ import annotations

import os
from pathlib import Path

from minirec.data.layout import sha256_of
from minirec.pipeline.settings import PipelineSettings
from minirec.pipeline.steps import Outcome, Step, code_version, run_or_reuse, run_step, stage_key
from minirec.stage import Recipe
from minirec.tracking import COMPARISON_EXPERIMENT, ensure_experiment, experiment_name, git_commit


class CategoryPipeline:
    """Runs (or reuses) the stages of one category under its pipeline run."""

    def __init__(self, category: str, settings: PipelineSettings, parent_run_id: str):
        self.category, self.settings, self.parent = category, settings, parent_run_id
        self.data_dir = settings.data_dir
        self.version = code_version()
        self.forcing = False
        self.outcomes: dict[str, Outcome] = {}

    def data_digests(self) -> dict[str, str]:
        from minirec.data import locate

        files = locate(self.category, self.data_dir or None)
        return {role: sha256_of(path) for role, path in files.all_files().items()}

    def run(self, step: Step) -> Outcome:
        import mlflow

        self.forcing = self.forcing or step.name == self.settings.force
        key = stage_key(step, self.category, self.data_digests(), self.version)
        outcome = run_or_reuse(step, key, self.parent, force=self.forcing)
        self.outcomes[step.name] = outcome
        client = mlflow.MlflowClient()
        client.log_metric(self.parent, f"seconds_{step.name}", outcome.seconds)
        client.set_tag(self.parent, f"run.{step.name}", outcome.run_id)
        return outcome

    def common(self) -> tuple[str, ...]:
        return ("--category", self.category, *(("--data_dir", self.data_dir) if self.data_dir else ()))

    def gpus(self) -> tuple[str, ...]:
        return ("--num_gpus", str(self.settings.num_gpus)) if self.settings.num_gpus else ()

    def run_all(self) -> list[str]:
        """Every stage in order; returns the scored run ids (baselines and model evaluations)."""
        settings = self.settings
        self.run(Step("data", "data", self.common()))
        if settings.sids:
            sids = self.run(Step("sids", "sids", (*self.common(), "--method", settings.sids,
                                                  "--embedding_model", settings.sids_embedding_model)))
            self.data_dir = sids.run_id  # later stages read the new SIDs from the sids run
        scored = [self.run(step).run_id for step in self.baseline_steps()]
        sft = self.run(Step("sft", "sft", ("--preset", settings.sft_preset, *self.common(), *self.gpus()),
                            resumable=True))
        scored.append(self.evaluate("evaluate_sft", sft.run_id, "sft"))
        grpo = self.run(Step("grpo", "grpo", ("--preset", settings.grpo_preset, *self.common(), "--model", sft.run_id,
                                              *self.gpus()), resumable=True))
        scored.append(self.evaluate("evaluate_grpo", grpo.run_id, "grpo"))
        return scored

    def baseline_steps(self) -> list[Step]:
        """One step per baseline of ``settings.baselines``; a learned one resumes like SFT when interrupted."""
        from minirec.baselines.settings import FLOORS

        steps = []
        for method, preset in self.settings.baseline_runs():
            args = (*self.common(), "--method", method, *(("--preset", preset) if preset else ()))
            steps.append(Step(method, "baselines", args, resumable=method not in FLOORS))
        return steps

    def evaluate(self, name: str, model_run_id: str, label: str) -> str:
        settings = self.settings
        args = ("--model", model_run_id, *self.common(), "--stage_label", label,
                "--num_beams", str(settings.evaluate_num_beams), "--batch_size", str(settings.evaluate_batch_size),
                "--limit", str(settings.evaluate_limit), *self.gpus())
        return self.run(Step(name, "evaluate", args)).run_id


def run_category(category: str, settings: PipelineSettings, driver_run_id: str) -> list[str]:
    """Run every stage of one category as children of a ``pipeline`` run in the category's experiment."""
    import mlflow

    client = mlflow.MlflowClient()
    preset = Path(settings.preset or "custom").stem
    parent = client.create_run(
        ensure_experiment(experiment_name(category)),
        run_name=f"pipeline-{preset}-{category}",
        tags={"category": category, "stage": "pipeline", "source": settings.preset, "entry_point": "main",
              "git_commit": git_commit(), "mlflow.parentRunId": driver_run_id},
    )
    status = "FAILED"
    try:
        scored = CategoryPipeline(category, settings, parent.info.run_id).run_all()
        status = "FINISHED"
    finally:
        client.set_terminated(parent.info.run_id, status)
    return scored


class PipelineRecipe(Recipe):
    stage = "main"
    settings_class = PipelineSettings
    module = "minirec.pipeline"
    default_preset = "tiny"
    experiment = COMPARISON_EXPERIMENT

    def files(self):
        return None

    def source(self) -> str:
        return self.settings.preset

    def run(self) -> None:
        from minirec.data import CATEGORIES

        settings = self.settings
        categories = list(CATEGORIES) if settings.category == "all" else [settings.category]
        driver = self.mlflow_run.info.run_id
        scored = [run_id for category in categories for run_id in run_category(category, settings, driver)]
        self.report = Path(settings.output_dir) / "report.md"
        run_step(Step("compare", "compare", ("--paper", "table1", "--category", settings.category,
                                             "--output_dir", settings.output_dir, "--run_ids", ",".join(scored))),
                 driver)

    def log(self) -> None:
        import mlflow

        mlflow.log_artifacts(str(self.report.parent), "report")
        print("\n" + self.report.read_text(encoding="utf-8"))
        print(f"Report: {self.report.resolve()}")
        uri = os.environ["MLFLOW_TRACKING_URI"]
        print(f"Runs:   {uri}" if uri.startswith("http") else f"Runs:   mlflow ui --backend-store-uri {uri}")
