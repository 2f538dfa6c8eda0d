"""The evaluate stage: decode a split with constrained beam search, score it, log beams, metrics and levels.

    python -m minirec.evaluate --model REF --category Industrial_and_Scientific [--split test] [--limit 200]
    python -m minirec.evaluate --model REF --category Industrial_and_Scientific --num_gpus 8
    mlflow run . -e evaluate -P model=REF -P category=Industrial_and_Scientific --env-manager local

REF is a local Hugging Face folder, a hub id, an MLflow run id, or a ``runs:/`` / ``models:/`` URI. The run is
tagged stage=<stage_label> (default: the stage of the run that produced the model, sft or grpo, else
``evaluate``), source=REF, scored=true, and records the train file of the run that trained the model
(``train_file.*``). ``--resume_from <evaluate run id>`` (or the same ``--output_dir``) continues an interrupted
evaluation with an identical result. With ``--strict true`` (the default) the run fails when any beam is not
a catalogue SID (``invalid_all`` > 0, upstream's CC).
"""

from __future__ import annotations

import os
from pathlib import Path

from minirec.errors import UserError
from minirec.evaluate.settings import EvaluateSettings
from minirec.stage import Recipe

MODEL_STAGES = ("sft", "grpo")


def model_stage(ref: str) -> str:
    """``sft`` or ``grpo`` when the model came from such a run, else ``evaluate``."""
    from minirec.models import source_run

    run = source_run(ref)
    stage = run.data.tags.get("stage") if run is not None else None
    return stage if stage in MODEL_STAGES else "evaluate"


def trained_on(ref: str) -> dict[str, str]:
    """The ``train_file.*`` params of the run that trained the model ``ref`` names (provenance of its scores)."""
    from minirec.models import source_run

    run = source_run(ref)
    if run is None:
        return {"train_file.path": "unknown: the model was not trained by a run of this harness"}
    return {key: value for key, value in run.data.params.items() if key.startswith("train_file.")} or {
        "train_file.path": f"unknown: run {run.info.run_id} recorded no train file"}


class EvaluateRecipe(Recipe):
    stage = "evaluate"
    settings_class = EvaluateSettings
    module = "minirec.evaluate"
    system_metrics = True

    @property
    def roles(self):
        return (self.settings.split, "index", "items", "info")

    @property
    def splits(self):
        return (self.settings.split,)

    @classmethod
    def base_settings(cls, overrides):
        ref = overrides.get("resume_from")
        if not ref:
            return {}
        from minirec.resume import resumed_settings

        return resumed_settings(ref)

    def complete(self) -> None:
        from minirec.models import resolve_model

        settings = self.settings
        if settings.resume_from:
            from minirec.refs import get_run

            previous = get_run(settings.resume_from)
            settings.output_dir = previous.data.params.get("output_dir", "")
            os.environ["MLFLOW_RUN_ID"] = settings.resume_from  # continue that very run
        resolve_model(settings.model)  # a bad reference fails here, before any run exists (and is cached)
        settings.stage_label = settings.stage_label or model_stage(settings.model)
        self.model_kind = self._model_kind()
        from minirec.data import Catalogue

        settings.decode.check_catalogue(len(Catalogue.load(self.files()).valid_sids))  # also before the run
        if settings.output_dir:  # a folder named again must hold this evaluation's shards, if any
            from minirec.evaluate import ShardStore, settings_manifest

            ShardStore.check_folder(settings.output_dir,
                                    settings_manifest(self.files(), settings.split, settings.decode))

    def _model_kind(self) -> str:
        """``released_checkpoint`` (upstream's, kkknight/MiniOneRec: by setting or by name, docs/upstream-profiles.md),
        ``harness`` (trained by a run of this harness) or ``external`` (any other folder or hub id)."""
        from minirec.models import source_run
        from minirec.upstream import RELEASED_KIND, check_released_category, released_checkpoint_name

        settings = self.settings
        self.released_name = released_checkpoint_name(settings.model)
        if self.released_name or settings.released_checkpoint:
            check_released_category(self.released_name, settings.category)
            settings.released_checkpoint = True
            return RELEASED_KIND
        return "harness" if source_run(settings.model) is not None else "external"

    def tags(self) -> dict[str, str]:
        """``model_kind`` (see :meth:`_model_kind`; ``released_checkpoint`` is what the report shows as "released
        checkpoint"), ``released_checkpoint`` (its folder or repository) and ``upstream.profile``."""
        from minirec.upstream import MODEL_KIND_TAG, RELEASED_TAG

        settings = self.settings
        tags = {MODEL_KIND_TAG: getattr(self, "model_kind", "external"), "upstream.profile": settings.profile}
        if settings.released_checkpoint:
            tags[RELEASED_TAG] = getattr(self, "released_name", None) or "true"
        return tags

    def source(self) -> str:
        return self.settings.model

    def stage_tag(self) -> str:
        return self.settings.stage_label

    def run_name(self) -> str:
        return f"evaluate-{self.settings.stage_label}-{self.settings.split}-{self.settings.category}"

    def setup(self) -> None:
        import torch

        from minirec.data import Catalogue, locate
        from minirec.devices import process_state, resolve_device
        from minirec.models import add_sid_tokens, load_model_and_tokenizer, resolve_model

        settings = self.settings
        self.files_read = locate(settings.category, settings.data_dir or None)
        self.catalogue = Catalogue.load(self.files_read)
        device = resolve_device(settings.device)
        self.state = process_state(device)
        place = self.state.device if device == "cuda" else torch.device("cpu")
        dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32, "float32": torch.float32,
                 "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.dtype]
        self.model, self.tokenizer = load_model_and_tokenizer(resolve_model(settings.model), dtype=dtype, device=place)
        self.sid_tokens_added = add_sid_tokens(self.tokenizer, self.model, self.catalogue)
        self.dtype = dtype

    def run(self) -> None:
        from minirec.evaluate import evaluate_model

        settings = self.settings
        self.evaluation = evaluate_model(self.model, self.tokenizer, self.files_read, self.catalogue, settings.decode,
                                         out_dir=settings.output_dir, split=settings.split, seed=settings.seed)

    def log(self) -> None:
        import mlflow

        from minirec.score import log_scores
        from minirec.tracking import in_pipeline, log_json_metrics, log_params

        evaluation, out = self.evaluation, Path(self.settings.output_dir)
        log_params({**evaluation.params(), **trained_on(self.settings.model), "dtype": str(self.dtype),
                    "tokenizer_length": len(self.tokenizer), "sid_tokens_added": self.sid_tokens_added})
        mlflow.log_dict(evaluation.generation_config.to_dict(), "generation_config.json")
        mlflow.log_artifact(str(out / "beams.parquet"), "beams")
        mlflow.log_artifact(str(out / "predictions.json"), "beams")
        log_scores(evaluation.scores, out / "scores")
        if evaluation.recall:
            log_json_metrics(evaluation.recall)
            mlflow.log_dict(evaluation.recall, "scores/beam_recall.json")
        recall = ("beam recall over the first {beam_recall_rows} rows: ".format(**evaluation.recall) + ", ".join(
            f"{name} {value:.3f}" for name, value in evaluation.recall.items() if name.startswith("beam_recall@"))
            if evaluation.recall else "")
        if in_pipeline():  # main's log stays short: the report has every number
            print(f"[evaluate] {self.settings.category} {self.settings.stage_label}: {evaluation.scores.headline()}"
                  + (f"; {recall}" if recall else ""), flush=True)
        else:
            print(evaluation.scores.summary())
            if recall:
                print(recall)
        print(f"[evaluate] run {self.mlflow_run.info.run_id}; outputs in {out}", flush=True)
        if self.settings.decode.strict and evaluation.scores.invalid_all:
            raise UserError(f"{evaluation.scores.invalid_all} predicted SIDs are not in the catalogue (strict mode)")
