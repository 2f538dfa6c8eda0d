"""The GRPO stage: constrained beam roll-outs and ranking rewards on trl's GRPOTrainer, tracked in one run.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific          # CPU, latest tiny SFT run
    python -m minirec.grpo --preset paper --model <SFT run id> --num_gpus 4             # 4 GPUs, ZeRO-2
    python -m minirec.grpo --resume_from <GRPO run id> --num_train_epochs 3             # extend a finished run
    mlflow run . -e grpo -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Reference: docs/upstream.md 5. Settings resolve as: the preset file (configs/grpo/<preset>.yaml), then, when
resuming, the resumed run's settings, then every option given. Without ``--model`` the policy is the latest
finished SFT run of the category and preset; the run logs the resolved policy as its ``model`` param.
"""

from __future__ import annotations

from pathlib import Path

from minirec.errors import NotFoundError
from minirec.grpo.settings import GRPOSettings
from minirec.stage import Recipe, ResumedInNewRun


def latest_sft_run(category: str, preset: str) -> str:
    """The id of the latest FINISHED run tagged stage=sft, this category and this preset."""
    import mlflow

    from minirec.tracking import configure_environment, experiment_name

    uri = configure_environment()
    preset = preset or "tiny"
    runs = mlflow.search_runs(
        experiment_names=[experiment_name(category)],
        filter_string=f"tags.stage = 'sft' and tags.category = '{category}' and tags.preset = '{preset}' "
                      "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    if not runs:
        raise NotFoundError(
            f"no finished SFT run for {category} with preset {preset} in {uri}; train one first "
            f"(mlflow run . -e sft -P preset={preset} -P category={category} --env-manager local) or pass model")
    return runs[0].info.run_id


class GRPORecipe(ResumedInNewRun, Recipe):
    stage = "grpo"
    settings_class = GRPOSettings
    module = "minirec.grpo"
    default_preset = "tiny"
    system_metrics = True
    splits = ("train", "valid")

    def complete(self) -> None:
        from minirec.models import resolve_model

        super().complete()
        settings = self.settings
        settings.model = settings.model or latest_sft_run(settings.category, settings.preset)
        resolve_model(settings.model)  # a bad reference fails here, before any run exists
        if "title_history_to_sid" in settings.tasks:  # upstream's sample=10000 raises on a smaller train split
            from minirec.data.layout import count_csv_rows
            from minirec.grpo.data import title_history_shortfall

            train = self.files().train  # validated once, as the run needs it anyway
            title_history_shortfall(count_csv_rows(train), settings.title_history_sample, train,
                                    settings.switch("rl_sample_raises"))

    def source(self) -> str:
        return self.settings.model

    def setup(self) -> None:
        from minirec.data import Catalogue, locate
        from minirec.devices import resolve_device
        from minirec.grpo.data import build_prompt_set
        from minirec.grpo.train import build_trainer, load_policy

        settings = self.settings
        device = resolve_device(settings.device)
        self.files_read = locate(settings.category, settings.data_dir or None)
        catalogue = Catalogue.load(self.files_read)
        model, tokenizer = load_policy(settings.model, device)
        self.prompts = build_prompt_set(
            self.files_read, catalogue, tasks=tuple(settings.tasks), quirks=settings.switches(),
            title_history_sample=settings.title_history_sample, seed=settings.shuffle_seed,
            max_train_prompts=None if settings.max_train_prompts < 0 else settings.max_train_prompts,
        )
        self.trainer = build_trainer(settings, model, tokenizer, self.files_read, catalogue, self.prompts, device)

    def run(self) -> None:
        import mlflow

        from minirec.devices import is_main_process
        from minirec.grpo.train import rollout_generation_config
        from minirec.resume import resumed_checkpoint
        from minirec.sft.recipe import check_world_size
        from minirec.tracking import log_params

        if is_main_process():
            prompts = self.prompts
            log_params({"policy_path": self.trainer.model.config._name_or_path, "train_prompts": len(prompts.train),
                        "eval_prompts": len(prompts.eval),
                        **{f"prompts.{task}": rows for task, rows in prompts.task_rows.items()},
                        **({"prompts.title_history_to_sid.asked": prompts.title_history_drawn[0],
                            "prompts.title_history_to_sid.drawn": prompts.title_history_drawn[1]}
                           if prompts.title_history_drawn else {})})
            mlflow.log_dict(rollout_generation_config(self.settings, self.trainer).to_dict(),
                            "rollout_generation_config.json")
        check_world_size(self.settings, self.trainer.accelerator.num_processes)
        checkpoint = resumed_checkpoint(self.settings)
        self.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    def log(self) -> None:
        from minirec.grpo.train import FINAL_CHECKPOINT
        from minirec.models import log_hf_model, save_checkpoint

        trainer, settings = self.trainer, self.settings
        policy = trainer.accelerator.unwrap_model(trainer.model)
        save_checkpoint(policy, trainer.processing_class, Path(settings.output_dir) / FINAL_CHECKPOINT)
        if settings.log_model:
            log_hf_model(policy, trainer.processing_class, tags={"stage": "grpo", "category": settings.category})
        run_id = self.mlflow_run.info.run_id
        print(f"[grpo] run {run_id} finished; evaluate it with: python -m minirec.evaluate --model {run_id} "
              f"--category {settings.category}", flush=True)
