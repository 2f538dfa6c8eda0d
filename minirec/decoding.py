"""How SID rankings are decoded, in one object shared by evaluate, SFT's final evaluation and GRPO's validation.

    decode = DecodeSettings(num_beams=50, batch_size=16, limit=0)      # what evaluate runs by default
    config = decode.generation_config(constraint, tokenizer)            # the object generate receives

Upstream decodes test prompts with 50 constrained beams, ``length_penalty=0`` and batches of 8
(``evaluate.sh``, docs/upstream.md 6.3); SFT validates by eval loss only and GRPO decodes 20 beams inside the
roll-out's constraint state (8.1 E). Here every ranking evaluation is one :class:`DecodeSettings`: the run
logs ``decode.as_params()`` and the generation config built from it, and that config is the one used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from minirec.errors import SettingsError

PROMPTS = ("test", "sft")
DECODERS = ("hf",)


@dataclass(frozen=True)
class DecodeSettings:
    """Beam count, batch, prompt wording, strictness and how many rows of the split (0: all)."""

    num_beams: int = 50
    batch_size: int = 16
    prompt: str = "test"
    strict: bool = True
    limit: int = 0
    decoder: str = "hf"

    def __post_init__(self):
        if self.num_beams < 1 or self.batch_size < 1 or self.limit < 0:
            raise SettingsError(f"decoding needs num_beams >= 1, batch_size >= 1 and limit >= 0; got {self}")
        if self.prompt not in PROMPTS or self.decoder not in DECODERS:
            raise SettingsError(f"prompt must be one of {PROMPTS} and decoder one of {DECODERS}; got {self}")

    def check_catalogue(self, num_sids: int) -> None:
        """More beams than catalogue SIDs would rank padding: refuse before decoding."""
        if self.num_beams > num_sids:
            raise SettingsError(f"num_beams = {self.num_beams} is out of range: expected an integer from 1 to the "
                                f"catalogue's {num_sids} SIDs")

    def generation_config(self, constraint, tokenizer):
        """The explicit beam-search config of :mod:`minirec.generation` for this decoding."""
        from minirec.generation import beam_generation_config

        return beam_generation_config(self.num_beams, constraint.max_new_tokens, tokenizer.eos_token_id,
                                      tokenizer.eos_token_id)

    def as_params(self, prefix: str = "decode.") -> dict[str, str]:
        return {f"{prefix}{name}": str(value) for name, value in asdict(self).items()}
