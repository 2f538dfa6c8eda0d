"""The SFT stage: upstream's five SFT tasks trained with the transformers Trainer, tracked in MLflow.

    python -m minirec.sft --preset tiny --category Industrial_and_Scientific      # CPU, minutes
    python -m minirec.sft --preset paper --base_model Qwen/Qwen2.5-1.5B-Instruct --num_gpus 8
    mlflow run . -e sft -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Reference: reference-spec section 4. Modules: ``data`` (tasks, prompts, tokenisation), ``config`` (presets),
``train`` (Trainer), ``freeze`` (``freeze_llm``), ``callbacks`` (MLflow step metrics), ``validation``
(valid-split beam evaluation), ``launch`` (several processes); the CLI is ``entrypoints/sft.py``.
"""
