"""What stands behind a scored run: the runs that trained its model, what they trained, and how healthy it was.

    python -m minirec.compare --paper table1

An evaluation's ``source`` names its model (an SFT or GRPO run id, or a URI :mod:`minirec.models` resolves to
one); a GRPO run's ``model`` param names its policy, the SFT run. From those runs the report reads, once per
category, what was run (preset, model size and initialisation, train rows used, optimiser steps, prompts) and
per stage the training-health facts that say whether a stage could have changed the model at all: for SFT the
eval-loss fall and the early-stopping epoch, for GRPO the share of roll-out groups with a hit (a group without
one has identical rewards, so zero advantages and no policy-gradient signal) and the KL to the SFT model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from minirec.compare import ScoredRun

MODEL_STAGES = ("sft", "grpo")


@dataclass
class Lineage:
    """The training runs behind one scored run (``None`` where there is none, e.g. for baselines)."""

    scored: ScoredRun
    model_run: object = None  # the sft or grpo run that produced the evaluated model
    sft_run: object = None  # the SFT run (the model run itself, or a GRPO run's policy)


def _run_named(client, ref: str):
    from minirec.models import source_run

    try:
        return source_run(ref)
    except Exception:  # a model URI of another store, a deleted run: the report says "not recorded"
        return None


def lineage(client, scored: ScoredRun) -> Lineage:
    found = Lineage(scored)
    if scored.stage.split("@")[0] not in MODEL_STAGES:
        return found
    model_run = _run_named(client, scored.tags.get("source", ""))
    if model_run is None or model_run.data.tags.get("stage") not in MODEL_STAGES:
        return found
    found.model_run = model_run
    if model_run.data.tags.get("stage") == "sft":
        found.sft_run = model_run
    else:
        found.sft_run = _run_named(client, model_run.data.params.get("model", ""))
    return found


@dataclass
class Health:
    """Training-health facts of one stage (``facts``: name -> shown value) and plain warnings."""

    stage: str
    facts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _metric(run, name: str) -> float:
    return float(run.data.metrics.get(name, math.nan))


def sft_health(run, stage: str = "sft") -> Health:
    health = Health(stage)
    first, best = _metric(run, "first_eval_loss"), _metric(run, "best_eval_loss")
    health.facts = {
        "eval loss, first -> best": f"{first:.3f} -> {best:.3f}" if not math.isnan(first) else "not logged",
        "best step / steps run": f"{_metric(run, 'best_step'):.0f} / {_metric(run, 'stopped_step'):.0f}",
        "epochs run": f"{_metric(run, 'stopped_epoch'):.2f}",
        "stopped early": "yes" if _metric(run, "early_stopped") == 1 else "no",
    }
    if not math.isnan(first) and not best < first:
        health.warnings.append(f"{stage}: the eval loss never fell below its first value ({first:.3f}); "
                               "SFT did not learn the task.")
    return health


def grpo_health(client, run, stage: str = "grpo") -> Health:
    health = Health(stage)
    hits = [m.value for m in client.get_metric_history(run.info.run_id, "rollout/hit_group_share")]
    kl = [m.value for m in client.get_metric_history(run.info.run_id, "kl")]
    if not hits:
        health.facts["roll-out groups with a hit"] = "not logged"
        return health
    silent = sum(value == 0 for value in hits)
    mean_hit = sum(hits) / len(hits)
    health.facts = {
        "optimiser steps": f"{len(hits)}",
        "roll-out groups with a hit (mean over steps)": f"{100 * mean_hit:.1f}%",
        "zero-advantage groups (no hit: identical rewards)": f"{100 * (1 - mean_hit):.1f}%",
        "steps in which no group hit": f"{silent} of {len(hits)}",
        "KL to the SFT model, last step": f"{kl[-1]:.2e}" if kl else "not logged",
    }
    if silent == len(hits):
        health.warnings.append(
            f"{stage}: no roll-out group hit its target in any of the {len(hits)} steps, so every advantage was "
            "zero and GRPO could not have changed the model (its numbers are SFT's, up to float noise).")
    elif silent > len(hits) / 2:
        health.warnings.append(
            f"{stage}: in {silent} of {len(hits)} steps no roll-out group hit its target (zero advantages): GRPO "
            "had a learning signal on fewer than half of its steps.")
    return health


def stage_health(client, found: Lineage) -> Health | None:
    run = found.model_run
    if run is None:
        return None
    if run.data.tags.get("stage") == "grpo":
        return grpo_health(client, run, found.scored.stage)
    return sft_health(run, found.scored.stage)


def what_was_run(found: list[Lineage]) -> list[str]:
    """Sentences for the category's header box: preset, model, data used, steps, decoding, rows scored."""
    lines = []
    sft = next((f.sft_run for f in found if f.sft_run is not None), None)
    grpo = next((f.model_run for f in found if f.model_run is not None
                 and f.model_run.data.tags.get("stage") == "grpo"), None)
    if sft is not None:
        params = sft.data.params
        model = params.get("model", "?")
        size = (f"{int(params['model.layers'])}-layer, hidden {int(params['model.hidden_size'])}, "
                f"{int(float(params['total_parameters'])) / 1e6:.2f}M parameters"
                if "model.layers" in params else f"{params.get('total_parameters', '?')} parameters")
        initialised = ("randomly initialised, not pretrained (minirec.tiny_model)" if model == "tiny"
                       else f"started from checkpoint `{model}`")
        samples = sum(int(v) for k, v in params.items() if k.startswith("samples."))
        rows = params.get("train_file.rows") or params.get("data.train.rows", "?")
        lines.append(f"SFT (run `{sft.info.run_id[:8]}`, preset `{sft.data.tags.get('preset', '?')}`): a {size} "
                     f"model, {initialised}; tasks {params.get('tasks', '?')}; {samples:,} training samples from "
                     f"a train split of {int(rows):,} rows; {_metric(sft, 'stopped_step'):.0f} optimiser steps.")
    if grpo is not None:
        params = grpo.data.params
        lines.append(f"GRPO (run `{grpo.info.run_id[:8]}`, preset `{grpo.data.tags.get('preset', '?')}`): "
                     f"{int(params.get('train_prompts', 0)):,} prompts, {params.get('prompts_per_step', '?')} per "
                     f"step x {params.get('num_generations', '?')} beams, reward {params.get('reward', '?')}, "
                     f"learning rate {params.get('learning_rate', '?')}.")
    return lines
