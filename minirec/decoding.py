"""How SID rankings are decoded, in one object shared by evaluate, SFT's final evaluation and GRPO's validation.

    decode = DecodeSettings(num_beams=50, batch_size=16, limit=0)      # what evaluate runs by default
    config = decode.generation_config(constraint, tokenizer)            # the object generate receives

Upstream decodes test prompts with 50 constrained beams, ``length_penalty=0`` and batches of 8
(``evaluate.sh``, docs/upstream.md 6.3); SFT validates by eval loss only and GRPO decodes 20 beams inside the
roll-out's constraint state (8.1 E). Here every ranking evaluation is one :class:`DecodeSettings`: the run
logs ``decode.as_params()`` and the generation config built from it, and that config is the one used (by
``generate`` itself with ``decoder=hf``; the ``sid`` decoder reproduces its beam search exactly, one prefill per
prompt instead of one per beam, and ``exact`` ranks every catalogue SID).

``masking`` is the constraint's masking mode (:mod:`minirec.constraint`): ``strict`` (fails closed, the default) or
one of upstream's, ``fail_open`` (paper release) and ``eos_fallback`` (since 2026-01-20), set by the upstream
switches ``constraint_fail_open`` / ``constraint_eos_fallback`` (:mod:`minirec.upstream`). Upstream's modes can
leave a row unconstrained, which only ``generate`` can decode: they need ``decoder=hf``, and they decode up to
upstream's ``max_new_tokens`` of 256 (``evaluate.sh``) instead of the grammar's longest SID.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from minirec.errors import SettingsError

PROMPTS = ("test", "sft")
# sid: one prefill per prompt, then transformers' beam search step for step (minirec.sid_decoder), the default;
# hf: model.generate with the constraint processor (for cross-checking); exact: every catalogue SID scored.
DECODERS = ("sid", "hf", "exact")
MASKINGS = ("strict", "fail_open", "eos_fallback")
UPSTREAM_MAX_NEW_TOKENS = 256  # evaluate.sh (docs/upstream.md 6.1), where upstream masking can leave rows free


@dataclass(frozen=True)
class DecodeSettings:
    """Beam count, batch, prompt wording, strictness and how many rows of the split (0: all)."""

    num_beams: int = 50
    batch_size: int = 16
    prompt: str = "test"
    strict: bool = True
    limit: int = 0
    decoder: str = "sid"
    recall_rows: int = 0  # rows also ranked exactly, for beam_recall@K (0: none)
    masking: str = "strict"  # the constraint's masking mode (module docstring)

    def __post_init__(self):
        if self.num_beams < 1 or self.batch_size < 1 or self.limit < 0 or self.recall_rows < 0:
            raise SettingsError(f"decoding needs num_beams >= 1, batch_size >= 1 and limit >= 0; got {self}")
        if self.prompt not in PROMPTS or self.decoder not in DECODERS:
            raise SettingsError(f"prompt must be one of {PROMPTS} and decoder one of {DECODERS}; got {self}")
        if self.masking not in MASKINGS:
            raise SettingsError(f"masking must be one of {MASKINGS}; got {self}")
        if self.masking != "strict" and self.decoder != "hf":
            raise SettingsError(f"masking = {self.masking} (upstream's constraint) can leave rows unconstrained, which "
                                f"only generate decodes: it needs decoder = hf, not {self.decoder}")

    def check_catalogue(self, num_sids: int) -> None:
        """More beams than catalogue SIDs would rank padding: refuse before decoding."""
        if self.num_beams > num_sids:
            raise SettingsError(f"num_beams = {self.num_beams} is out of range: expected an integer from 1 to the "
                                f"catalogue's {num_sids} SIDs")

    def generation_config(self, constraint, tokenizer):
        """The explicit beam-search config of :mod:`minirec.generation` for this decoding."""
        from minirec.generation import beam_generation_config

        new_tokens = constraint.max_new_tokens if self.masking == "strict" else max(constraint.max_new_tokens,
                                                                                    UPSTREAM_MAX_NEW_TOKENS)
        return beam_generation_config(self.num_beams, new_tokens, tokenizer.eos_token_id, tokenizer.eos_token_id)

    def rank(self, model, input_ids, attention_mask, constraint, config):
        """``(generated, scores)``: the ``num_beams`` best SIDs of each left-padded prompt, best first, with
        their summed log-probabilities, by this decoding's engine (the same result from ``sid`` and ``hf``, up to
        float near-ties: :mod:`minirec.sid_decoder`)."""
        if self.decoder == "hf":
            from minirec.generation import generate_sid_beams

            return generate_sid_beams(model, input_ids, attention_mask, constraint, config)
        from minirec.sid_decoder import exact_top_k, sid_beam_search

        engine = exact_top_k if self.decoder == "exact" else sid_beam_search
        return tuple(engine(model, input_ids, attention_mask, constraint, self.num_beams,
                            pad_token_id=config.pad_token_id))

    def as_params(self, prefix: str = "decode.") -> dict[str, str]:
        return {f"{prefix}{name}": str(value) for name, value in asdict(self).items()}
