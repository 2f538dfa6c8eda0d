"""The score stage: score a beam-output file and log it as one MLflow run (docs/upstream.md 6.4, 6.6).

    python -m minirec.score --predictions results/test.json --category Industrial_and_Scientific
    python -m minirec.score --predictions beams.parquet --category Office_Products --stage sft
    mlflow run . -e score -P predictions=results/test.json -P category=Industrial_and_Scientific --env-manager local

The predictions file is upstream's result JSON (a list of {"input", "output", "predict"}) or the harness Parquet
(:mod:`minirec.beams`). The numbers equal upstream calc.py's; the run adds 95% user-bootstrap CIs,
collision-aware HR_coll@K, invalid_all, and the per-SID-level tables. The file is read and scored before the
run starts, so a bad file is a one-line error (file, row, field) and leaves no run behind.
"""

from __future__ import annotations

from pathlib import Path

from minirec.score.settings import ScoreSettings
from minirec.stage import Recipe


class ScoreRecipe(Recipe):
    stage = "score"
    settings_class = ScoreSettings
    module = "minirec.score"
    roles = ("index", "items", "info")

    def complete(self) -> None:
        from minirec.beams import read_predictions
        from minirec.data import Catalogue
        from minirec.errors import UserError
        from minirec.score import score_predictions

        settings = self.settings
        self.path = Path(settings.predictions)
        frame = read_predictions(self.path)
        try:
            self.scores = score_predictions(frame, Catalogue.load(self.files()), n_boot=settings.n_boot,
                                            seed=settings.seed, source=str(self.path))
        except ValueError as error:
            raise UserError(str(error)) from None

    def source(self) -> str:
        return str(self.path.resolve())

    def stage_tag(self) -> str:
        return self.settings.stage_label

    def run_name(self) -> str:
        return f"score-{self.settings.stage_label}-{self.settings.category}"

    def log(self) -> None:
        import mlflow

        from minirec.data import sha256_of
        from minirec.score import log_scores
        from minirec.tracking import log_params

        log_params({"predictions_sha256": sha256_of(self.path)})
        mlflow.log_artifact(str(self.path), "predictions")
        log_scores(self.scores, Path(self.settings.output_dir) / "scores")
        print(self.scores.summary())
        print(f"[score] run {self.mlflow_run.info.run_id}", flush=True)
