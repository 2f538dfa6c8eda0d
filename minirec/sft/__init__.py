"""The SFT stage: upstream's SFT tasks trained with the transformers Trainer, tracked in MLflow.

    python -m minirec.sft --preset tiny --category Industrial_and_Scientific      # CPU, minutes
    python -m minirec.sft --preset paper --model Qwen/Qwen2.5-1.5B-Instruct --num_gpus 8
    mlflow run . -e sft -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Reference: docs/upstream.md section 4. Modules: ``settings`` (the settings dataclass and presets), ``recipe``
(the stage), ``data`` (tasks, prompts, tokenisation), ``train`` (Trainer), ``freeze`` (``freeze_llm``),
``callbacks`` (MLflow step metrics), ``validation`` (valid-split beam evaluation).
"""
