"""Constrained beam-search evaluation of an SFT model on the valid split, logged into the SFT run.

    python -m minirec.sft --preset tiny --final_eval_limit 500 --evaluate_untrained true

Reference: reference-spec 6.2-6.4 (the evaluation) and 4.1 (upstream validates SFT only by eval loss; this
evaluation is the harness's addition). Metrics carry a prefix, ``valid_HR_at_10`` for the trained model and
``untrained_valid_HR_at_10`` for the base model before training, so they never mix with test-split scores and
the run is not tagged ``scored`` (``compare`` reads test-split runs only).
"""

from __future__ import annotations

from pathlib import Path

from minirec.sft.config import SFTConfig
from minirec.tracking import is_main_process


def evaluate_on_valid(model, tokenizer, files, catalogue, config: SFTConfig, out_dir: str | Path,
                      prefix: str) -> dict[str, float]:
    """Evaluate ``model`` on the first ``final_eval_limit`` valid rows; log ``<prefix>_<metric>`` metrics.

    Every process takes part (the evaluation shards the rows across processes); only the main one logs.
    Returns the logged metrics (empty on other processes, or when ``final_eval_limit`` is 0).
    """
    if config.final_eval_limit == 0:
        return {}
    from minirec.evaluate import evaluate_model

    was_training, use_cache = model.training, model.config.use_cache
    model.eval()
    model.config.use_cache = True  # training switches the KV cache off; beam search wants it
    try:
        _, scores = evaluate_model(model, tokenizer, files, catalogue, split="valid",
                                   num_beams=config.final_eval_beams, batch_size=config.final_eval_batch_size,
                                   limit=config.final_eval_limit if config.final_eval_limit > 0 else None,
                                   out_dir=out_dir, seed=config.seed)
    finally:
        model.train(was_training)
        model.config.use_cache = use_cache
    if scores is None or not is_main_process():
        return {}
    import mlflow

    metrics = {f"{prefix}_{name}": value for name, value in scores.mlflow_metrics().items()}
    mlflow.log_metrics(metrics)
    mlflow.log_dict(scores.metrics_json(), f"{prefix}/metrics.json")
    return metrics
