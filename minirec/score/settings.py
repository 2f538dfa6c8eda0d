"""Settings of the score stage: the predictions file, its category, and the bootstrap.

    python -m minirec.score --predictions results/test.json --category Industrial_and_Scientific --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.settings import StageSettings, setting


@dataclass
class ScoreSettings(StageSettings):
    STAGE = "score"

    predictions: str = setting("", "upstream result JSON or harness beams Parquet")
    stage_label: str = setting("score", "what the predictions come from, e.g. sft, grpo (the run's stage tag)",
                               aliases=("stage",))
    n_boot: int = setting(1000, "bootstrap draws of the 95% intervals", minimum=1, maximum=1_000_000)
    seed: int = setting(0, "bootstrap seed")

    def check(self) -> None:
        if not self.predictions:
            from minirec.errors import SettingsError

            raise SettingsError("predictions is required: an upstream result JSON or a harness beams Parquet file")
