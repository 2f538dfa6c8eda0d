"""Settings of the evaluate stage: which model, which split, and how to decode it (one :class:`DecodeSettings`).

    python -m minirec.evaluate --model <run id> --category Industrial_and_Scientific --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.decoding import DECODERS, PROMPTS, DecodeSettings
from minirec.settings import LaunchedSettings, setting
from minirec.upstream import UpstreamSettings

UPSTREAM_BATCH_SIZE = 8  # evaluate.sh --batch_size 8 (docs/upstream.md 6.1)


@dataclass
class EvaluateSettings(UpstreamSettings, LaunchedSettings):
    """Every setting of an evaluation; defaults are upstream's evaluate.sh (docs/upstream.md 6.1-6.3).

    Upstream switches (``upstream``, ``quirks``; minirec.upstream) acting here: eval_batch_8 (batches of 8),
    constraint_fail_open / constraint_eos_fallback (upstream's masking; decoded by generate, ``decoder=hf``, and
    never fatal: upstream reports invalid beams as CC and carries on, so ``strict`` is off under them).
    """

    STAGE = "evaluate"

    model: str = setting("", "model to evaluate: local folder, hub id, MLflow run id, runs:/ or models:/ URI")
    split: str = setting("test", "rows to evaluate", choices=("valid", "test"))
    num_beams: int = setting(50, "beams = ranked SIDs per user", upstream="evaluate.sh: 50", minimum=1, maximum=1000)
    batch_size: int = setting(16, "prompts per decoding batch", upstream="evaluate.sh: 8", minimum=1, maximum=4096)
    limit: int = setting(0, "evaluate only the first N rows (0: all)", minimum=0)
    prompt: str = setting("test", "prompt wording: upstream's test prompt or the SFT task-1 sentence",
                          choices=PROMPTS)
    decoder: str = setting("sid", "decoding engine: sid (one prefill per prompt, generate's beam search step for "
                           "step), hf (model.generate, for cross-checking) or exact (every catalogue SID scored)",
                           choices=DECODERS)
    recall_rows: int = setting(32, "first N rows also ranked exactly, to report beam_recall@K: the share of the "
                               "true top-K that beam search returned (0: skip)", minimum=0)
    strict: bool = setting(True, "fail the run if any beam is not a catalogue SID (upstream's CC > 0)")
    stage_label: str = setting("", "stage tag of the run (default: the model's stage, sft or grpo, else evaluate)",
                               aliases=("stage",))
    dtype: str = setting("auto", "weights dtype (auto: bfloat16 on GPU as upstream, float32 on CPU)",
                         choices=("auto", "float32", "bfloat16", "float16"))
    resume_from: str = setting("", "id of an interrupted evaluate run to continue in its output folder")
    seed: int = setting(0, "seed of transformers and the bootstrap")
    released_checkpoint: bool = setting(False, "the model is one of upstream's released checkpoints "
                                        "(kkknight/MiniOneRec Industrial_ckpt / Office_ckpt): tag the run "
                                        "model_kind=released_checkpoint (also recognised by name, see "
                                        "docs/upstream-profiles.md)")

    def check(self) -> None:
        super().check()
        from minirec.errors import SettingsError

        if not self.model and not self.resume_from:
            raise SettingsError("model is required: a local folder, hub id, MLflow run id, runs:/ or models:/ URI")
        if self.masking != "strict" and self.decoder == "exact":
            raise SettingsError(f"decoder = exact ranks catalogue SIDs only; upstream's masking ({self.masking}, "
                                "from the profile's constraint switch) needs decoder hf (or sid, which then means hf)")

    @property
    def decode(self) -> DecodeSettings:
        """The decoding: as set, with the upstream switches applied (batch 8; upstream masking through generate,
        not strict)."""
        masking = self.masking
        upstream_masking = masking != "strict"
        return DecodeSettings(num_beams=self.num_beams,
                              batch_size=UPSTREAM_BATCH_SIZE if self.switch("eval_batch_8") else self.batch_size,
                              prompt=self.prompt, strict=self.strict and not upstream_masking, limit=self.limit,
                              decoder="hf" if upstream_masking else self.decoder, recall_rows=self.recall_rows,
                              masking=masking)
