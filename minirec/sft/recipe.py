"""The SFT stage: fine-tune a base model on upstream's SFT tasks, tracked in one MLflow run.

    python -m minirec.sft --preset tiny --category Industrial_and_Scientific
    python -m minirec.sft --preset paper --model Qwen/Qwen2.5-1.5B-Instruct --num_gpus 8     # ZeRO-2
    python -m minirec.sft --preset tiny --device cpu --num_gpus 2                            # 2 gloo processes
    python -m minirec.sft --resume_from <run id>                                             # continue a run
    mlflow run . -e sft -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Reference: docs/upstream.md section 4. Every setting of :class:`minirec.sft.settings.SFTSettings` is an
option; preset values (``configs/sft/<preset>.yaml``) apply first, options override them. The run logs the
resolved settings, the train and valid splits it read, step metrics, system metrics, every checkpoint (so
``resume_from`` works from any machine, :mod:`minirec.resume`), the final valid-split beam evaluation and the
best checkpoint as its MLflow model.
"""

from __future__ import annotations

from pathlib import Path

from minirec.sft.settings import TINY_MODEL, SFTSettings
from minirec.stage import Recipe, ResumedInNewRun


def check_world_size(settings, actual: int) -> None:
    """The processes that trained are the ones the settings (and the logged batch arithmetic) assumed."""
    if actual != settings.world_size:
        raise RuntimeError(f"trained on {actual} processes but the settings assume world_size {settings.world_size}: "
                           "the launch did not start the processes it was asked for")


class SFTRecipe(ResumedInNewRun, Recipe):
    stage = "sft"
    settings_class = SFTSettings
    module = "minirec.sft"
    default_preset = "tiny"
    system_metrics = True
    splits = ("train", "valid")

    def complete(self) -> None:
        super().complete()
        if self.settings.model != TINY_MODEL:
            from minirec.models import resolve_model

            resolve_model(self.settings.model)  # a bad reference fails here, before any run exists

    def source(self) -> str:
        return self.settings.model

    def prepare(self) -> None:
        from minirec.sft.train import prepare_base_model

        super().prepare()
        prepare_base_model(self.settings)  # build the tiny model once, before any process looks for it

    def setup(self) -> None:
        from minirec.data import Catalogue, locate
        from minirec.devices import resolve_device
        from minirec.sft.train import prepare_model

        settings = self.settings
        self.files_read = locate(settings.category, settings.data_dir or None)
        self.catalogue = Catalogue.load(self.files_read)
        self.prepared = prepare_model(settings, self.catalogue, resolve_device(settings.device))

    def run(self) -> None:
        from minirec.devices import is_main_process
        from minirec.resume import CheckpointArtifacts, resumed_checkpoint
        from minirec.sft.train import train_sft
        from minirec.sft.validation import evaluate_on_valid

        settings, out = self.settings, Path(self.settings.output_dir)
        decode = settings.final_decode()
        if is_main_process():
            from minirec.tracking import log_params

            log_params(self.prepared.facts())
        if settings.evaluate_untrained:
            evaluate_on_valid(self.prepared.model, self.prepared.tokenizer, self.files_read, self.catalogue, decode,
                              out / "untrained_valid_eval", prefix="untrained_valid", seed=settings.seed)
        checkpoint = resumed_checkpoint(self.settings)
        self.result = train_sft(settings, self.files_read, self.catalogue, prepared=self.prepared,
                                resume_checkpoint=str(checkpoint) if checkpoint else None,
                                callbacks=[CheckpointArtifacts()] if is_main_process() else [])
        check_world_size(settings, self.result.trainer.args.world_size)
        self.valid_metrics = evaluate_on_valid(self.result.trainer.model, self.prepared.tokenizer, self.files_read,
                                               self.catalogue, decode, out / "valid_eval", prefix="valid",
                                               seed=settings.seed)

    def log(self) -> None:
        import mlflow

        from minirec.tracking import log_params

        result = self.result
        log_params({f"samples.{task}": count for task, count in result.datasets.task_counts.items()})
        mlflow.log_metrics(result.summary)
        if self.settings.log_model:
            from minirec.models import log_hf_model

            log_hf_model(result.trainer.model, self.prepared.tokenizer,
                         tags={"stage": "sft", "category": self.settings.category})
        shown = {**result.summary, **{k: v for k, v in self.valid_metrics.items()
                                       if k in ("valid_HR_at_10", "valid_NDCG_at_10")}}
        print("[sft] " + ", ".join(f"{name} {value:.4g}" for name, value in shown.items()), flush=True)
        print(f"[sft] run {self.mlflow_run.info.run_id}; outputs in {self.settings.output_dir}", flush=True)
