"""The baselines stage: rank, score and log a baseline (one MLflow run per category and method).

    python -m minirec.baselines --category Industrial_and_Scientific --method all [--split test]
    python -m minirec.baselines --category Industrial_and_Scientific --method sasrec [--preset cpu|tiny|paper]
    python -m minirec.baselines --resume_from <run id>                   # continue an interrupted learned run
    mlflow run . -e baselines -P method=sasrec -P category=Industrial_and_Scientific --env-manager local

Each run is tagged ``stage=<method>`` and ``scored=true``, so ``compare`` lists it beside the model stages.

- Floors (``popularity``, ``transition``, :mod:`minirec.baselines.floors`): counted on train, ranked, scored.
- Learned methods (``sasrec``, ``gru4rec``, ``caser``, ``hstu``, ``tiger``, :mod:`minirec.recsys`): trained on
  train with :func:`~minirec.recsys.train_recommender` (seeded; early stopping on valid NDCG@20), the best
  epoch's model ranks the ``split`` rows (50 distinct catalogue SIDs each, :func:`~minirec.recsys.rank_split`)
  and the ranking goes through the same scorer as a model's beams. The run also logs every epoch (``loss``,
  ``epoch_seconds``, ``eval_seconds``, ``valid_HR_at_10``, ``valid_NDCG_at_20``, ... at step = epoch), the
  untrained model's valid metrics, checkpoints (``resume_from``, :mod:`minirec.baselines.artifacts`), the best
  model as ``model/`` and a summary (``epochs_run``, ``best_epoch``, ``train_rows``, ``seconds_per_epoch``,
  ``cpu_seconds``, ...); tags ``method``, ``paper_method`` (the method's row name in the paper's Table 1),
  ``baseline_kind`` (``floor`` / ``learned``) and ``preset``.
"""

from __future__ import annotations

import time
from pathlib import Path

from minirec.baselines.settings import BaselineSettings, PAPER_METHOD
from minirec.stage import Recipe, ResumedInNewRun, expand_categories

TRAIN_DIR, RESUMED_DIR, STAGING_DIR = "train", "resumed", "checkpoint-upload"


class BaselineRecipe(ResumedInNewRun, Recipe):
    stage = "baselines"
    settings_class = BaselineSettings
    module = "minirec.baselines"

    @classmethod
    def expand(cls, settings):
        return [one.for_method(method) for one in expand_categories(cls, settings) for method in one.methods()]

    @property
    def system_metrics(self) -> bool:
        return self.settings.learned

    @property
    def roles(self):
        middle = ("valid",) if self.settings.learned and self.settings.split != "valid" else ()
        return ("train", *middle, self.settings.split, "index", "items", "info")

    @property
    def splits(self):
        return tuple(role for role in self.roles if role in ("train", "valid", "test"))

    def complete(self) -> None:
        super().complete()
        settings = self.settings
        if settings.learned:
            from minirec.data import Catalogue
            from minirec.recsys import build
            from minirec.recsys.train import num_items_of

            catalogue = Catalogue.load(self.files())
            # a model argument the method does not take fails here (a SettingsError), before any run exists
            build(settings.method, num_items_of(catalogue), settings.rec_settings(), catalogue)

    def source(self) -> str:
        return self.files().relative(self.files().train)

    def stage_tag(self) -> str:
        return self.settings.method

    def run_name(self) -> str:
        preset = f"-{self.settings.preset}" if self.settings.learned else ""
        return f"{self.settings.method}{preset}-{self.settings.split}-{self.settings.category}"

    def tags(self) -> dict[str, str]:
        settings = self.settings
        tags = {"method": settings.method, "baseline_kind": "learned" if settings.learned else "floor"}
        if settings.learned:
            tags["paper_method"] = PAPER_METHOD[settings.method]
        return {**super().tags(), **tags}

    def prepare(self) -> None:
        self.resume_folder = None
        super().prepare()

    def fetch_resumed(self) -> None:
        """The old run's newest intact checkpoint (its own format, not a Trainer's) into ``resumed/``."""
        from minirec.baselines.artifacts import fetch_resume_folder

        settings = self.settings
        self.resume_folder = fetch_resume_folder(settings.resume_from, Path(settings.output_dir) / RESUMED_DIR)
        print(f"[baselines] resuming run {self.settings.resume_from} from {self.resume_folder.name}", flush=True)

    def setup(self) -> None:
        from minirec.data import Catalogue, read_split

        files = self.files()
        self.catalogue = Catalogue.load(files)
        self.train, self.rows = read_split(files.train), read_split(files.split(self.settings.split))
        if self.settings.learned:
            import torch

            from minirec.devices import resolve_device

            if self.settings.threads:
                torch.set_num_threads(self.settings.threads)
            self.valid = read_split(files.valid)
            self.device = resolve_device(self.settings.device)

    def run(self) -> None:
        from minirec.score import score_predictions

        started_wall, started_cpu = time.perf_counter(), time.process_time()
        if self.settings.learned:
            self.beams = self.train_and_rank()
        else:
            from minirec.baselines.floors import rank

            self.beams = rank(self.settings.method, self.train, self.rows, self.catalogue, k=self.settings.num_beams)
        self.scores = score_predictions(self.beams, self.catalogue)
        self.wall_seconds = time.perf_counter() - started_wall
        self.cpu_seconds = time.process_time() - started_cpu

    # --- learned methods ---------------------------------------------------------------------------------

    def train_and_rank(self):
        import mlflow

        from minirec.recsys import rank_split, train_recommender

        settings, out = self.settings, Path(self.settings.output_dir)
        rec = settings.rec_settings()
        if settings.evaluate_untrained and self.resume_folder is None:
            mlflow.log_metrics(self.untrained_metrics(rec))
        self.last_upload, self.uploaded_epoch, self.last_record = time.monotonic(), None, None
        began = time.process_time()
        self.result = train_recommender(settings.method, rec, None, self.catalogue, out / TRAIN_DIR,
                                        resume_from=self.resume_folder, on_epoch=self.on_epoch, train=self.train,
                                        valid=self.valid, device=self.device)
        self.train_cpu_seconds = time.process_time() - began
        self.upload_last_checkpoint()
        began, began_cpu = time.perf_counter(), time.process_time()
        beams = rank_split(self.result.model, self.rows, self.catalogue, k=settings.num_beams)
        self.rank_seconds, self.rank_cpu_seconds = time.perf_counter() - began, time.process_time() - began_cpu
        return beams

    def untrained_metrics(self, rec) -> dict[str, float]:
        """Valid metrics of the model as training starts (same seed, same initial weights)."""
        from minirec.recsys import Sequences, build, evaluate
        from minirec.recsys.train import num_items_of, seed_everything
        from minirec.tracking import metric_name

        valid = self.valid.head(rec.valid_rows) if rec.valid_rows else self.valid
        num_items = num_items_of(self.catalogue)
        seed_everything(rec.seed)
        model = build(rec.method, num_items, rec, self.catalogue).to(self.device)
        metrics = evaluate(model, Sequences.from_frame(valid, num_items, rec.max_len), rec, self.catalogue)
        return {f"untrained_valid_{metric_name(name)}": value for name, value in metrics.items()}

    def on_epoch(self, epoch: int, record: dict) -> None:
        """Each epoch's metrics at step = epoch; the checkpoint (written after evaluations) every so often."""
        import mlflow

        from minirec.tracking import metric_name

        names = {"loss": "loss", "seconds": "epoch_seconds", "eval_seconds": "eval_seconds"}
        metrics = {names.get(key, metric_name(key)): float(value) for key, value in record.items()
                   if key != "epoch" and isinstance(value, (int, float))}
        mlflow.log_metrics(metrics, step=epoch)
        if "valid_NDCG@20" in record:  # train_recommender wrote checkpoint.pt for this epoch
            self.last_record = (epoch, record)
            if time.monotonic() - self.last_upload >= self.settings.checkpoint_seconds:
                self.upload(epoch, record)

    def upload(self, epoch: int, record: dict) -> None:
        from minirec.baselines.artifacts import upload_checkpoint

        out = Path(self.settings.output_dir)
        upload_checkpoint(out / TRAIN_DIR, epoch, record, out / STAGING_DIR)
        self.last_upload, self.uploaded_epoch = time.monotonic(), epoch

    def upload_last_checkpoint(self) -> None:
        if self.last_record is not None and self.last_record[0] != self.uploaded_epoch:
            self.upload(*self.last_record)

    # --- logging -----------------------------------------------------------------------------------------

    def log(self) -> None:
        import mlflow

        from minirec.beams import write_beams
        from minirec.score import log_scores

        out = Path(self.settings.output_dir)
        mlflow.log_artifact(str(write_beams(out / "beams.parquet", self.beams)), "beams")
        log_scores(self.scores, out / "scores")
        summary = {"wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds}
        if self.settings.learned:
            summary.update(self.learned_summary())
            if self.settings.log_model:
                from minirec.baselines.artifacts import log_model

                log_model(self.result, out / "model")
        mlflow.log_metrics(summary)
        metrics = self.scores.metrics
        trained = (f" (epochs {summary['epochs_run']:.0f}, best {summary['best_epoch']:.0f}, "
                   f"{summary['seconds_per_epoch']:.1f} s an epoch)" if self.settings.learned else "")
        print(f"[baselines] {self.settings.category} {self.settings.method}{trained}: HR@10 {metrics['HR@10']:.4f} "
              f"NDCG@10 {metrics['NDCG@10']:.4f} over {self.scores.n} rows; run {self.mlflow_run.info.run_id}",
              flush=True)

    def learned_summary(self) -> dict[str, float]:
        from minirec.tracking import metric_name

        result = self.result
        evals = [record.get("eval_seconds", 0.0) for record in result.history]
        summary = {
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stopped_early": float(result.stopped_early), "train_rows": result.train_rows,
            "valid_rows": len(self.valid.head(result.settings.valid_rows) if result.settings.valid_rows else self.valid),
            "seconds_per_epoch": result.seconds_per_epoch, "train_seconds": sum(result.train_seconds),
            "eval_seconds_total": sum(evals), "train_cpu_seconds": self.train_cpu_seconds,
            "rank_seconds": self.rank_seconds, "rank_cpu_seconds": self.rank_cpu_seconds,
            "epochs_this_run": len(result.train_seconds),
            "parameters": sum(p.numel() for p in result.model.parameters()),
        }
        summary.update({f"best_valid_{metric_name(name)}": value for name, value in result.best_metrics.items()})
        return summary
