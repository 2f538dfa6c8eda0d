"""Constrained beam-search evaluation of an SFT model on the valid split, logged into the SFT run.

    python -m minirec.sft --preset tiny --final_eval_limit 500 --evaluate_untrained true

Reference: docs/upstream.md 6.2-6.4 (the evaluation) and 4.1 (upstream validates SFT only by eval loss; this
evaluation is the harness's addition). The decoding is the evaluate stage's own (:func:`minirec.evaluate
.evaluate_model` with the settings' :class:`~minirec.decoding.DecodeSettings`). Metrics carry a prefix,
``valid_HR_at_10`` for the trained model and ``untrained_valid_HR_at_10`` for the base model before training,
so they never mix with test-split scores and the run is not tagged ``scored`` (``compare`` reads test-split
runs only).
"""

from __future__ import annotations

from pathlib import Path

from minirec.decoding import DecodeSettings
from minirec.devices import is_main_process


def evaluate_on_valid(model, tokenizer, files, catalogue, decode: DecodeSettings | None, out_dir: str | Path,
                      prefix: str, seed: int = 0) -> dict[str, float]:
    """Evaluate ``model`` on the valid split as ``decode`` says; log ``<prefix>_<metric>`` metrics.

    Every process takes part (the evaluation shards the rows across processes); only the main one logs.
    Returns the logged metrics (empty on other processes, or when ``decode`` is ``None``).
    """
    if decode is None:
        return {}
    from minirec.evaluate import evaluate_model

    was_training, use_cache = model.training, model.config.use_cache
    model.eval()
    model.config.use_cache = True  # training switches the KV cache off; beam search wants it
    try:
        evaluation = evaluate_model(model, tokenizer, files, catalogue, decode, split="valid", out_dir=out_dir,
                                    seed=seed)
    finally:
        model.train(was_training)
        model.config.use_cache = use_cache
    if evaluation.scores is None or not is_main_process():
        return {}
    import mlflow

    metrics = {f"{prefix}_{name}": value for name, value in evaluation.scores.mlflow_metrics().items()}
    mlflow.log_metrics(metrics)
    mlflow.log_dict(evaluation.scores.metrics_json(), f"{prefix}/metrics.json")
    mlflow.log_dict({**evaluation.params(), "generation_config": evaluation.generation_config.to_dict()},
                    f"{prefix}/decoding.json")
    return metrics
