"""The baselines stage: rank, score and log a baseline (one MLflow run per category and method).

    python -m minirec.baselines --category Industrial_and_Scientific --method all [--split test]
    mlflow run . -e baselines -P category=all --env-manager local

Each run is tagged ``stage=<method>`` and ``scored=true``, so ``compare`` lists it beside the model stages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from minirec.baselines.settings import BaselineSettings
from minirec.stage import Recipe, expand_categories


class BaselineRecipe(Recipe):
    stage = "baselines"
    settings_class = BaselineSettings
    module = "minirec.baselines"

    @classmethod
    def expand(cls, settings):
        return [dataclasses.replace(one, method=method) for one in expand_categories(cls, settings)
                for method in one.methods()]

    @property
    def roles(self):
        return ("train", self.settings.split, "index", "items", "info")

    @property
    def splits(self):
        return ("train", self.settings.split)

    def source(self) -> str:
        return self.files().relative(self.files().train)

    def stage_tag(self) -> str:
        return self.settings.method

    def run_name(self) -> str:
        return f"{self.settings.method}-{self.settings.split}-{self.settings.category}"

    def setup(self) -> None:
        from minirec.data import Catalogue, read_split

        files = self.files()
        self.catalogue = Catalogue.load(files)
        self.train, self.rows = read_split(files.train), read_split(files.split(self.settings.split))

    def run(self) -> None:
        from minirec.baselines.floors import rank
        from minirec.score import score_predictions

        self.beams = rank(self.settings.method, self.train, self.rows, self.catalogue, k=self.settings.num_beams)
        self.scores = score_predictions(self.beams, self.catalogue)

    def log(self) -> None:
        import mlflow

        from minirec.beams import write_beams
        from minirec.score import log_scores

        out = Path(self.settings.output_dir)
        mlflow.log_artifact(str(write_beams(out / "beams.parquet", self.beams)), "beams")
        log_scores(self.scores, out / "scores")
        metrics = self.scores.metrics
        print(f"[baselines] {self.settings.category} {self.settings.method}: HR@10 {metrics['HR@10']:.4f} "
              f"NDCG@10 {metrics['NDCG@10']:.4f} over {self.scores.n} rows", flush=True)
