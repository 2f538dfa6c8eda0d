"""TIGER (Rajput et al. 2023, "Recommender Systems with Generative Retrieval", NeurIPS): a small T5 over SIDs.

The history's items become their SID tokens, flattened in order (``<a_1><b_2><c_3><a_4>...``) and closed by
EOS: the encoder input. The decoder learns the target item's SID tokens followed by EOS (cross-entropy, T5's
right-shifted teacher forcing from the decoder start token = pad). Ranking is beam search constrained to the
catalogue's SIDs (:class:`minirec.constraint.SidConstraint` with the grammar ``SID -> EOS``, no newline
token: TIGER's targets end at the SID), under the harness's isolated beam config
(:func:`minirec.generation.beam_generation_config`: ``num_beams = num_return_sequences = k``,
``length_penalty=0``, ``do_sample=False``), so beam scores are summed token log-probabilities.

The model is ``transformers.T5ForConditionalGeneration`` built from a config made here (random init, nothing
downloaded) over a vocabulary of ``<pad>``, ``</s>``, ``<unk>`` and the catalogue's SID tokens in sorted order
(:func:`sid_tokenizer`: a ``tokenizers`` WordLevel model in a ``PreTrainedTokenizerFast``). The decoder start
token is pad (id 0), so generated sequences begin with it and the constraint processor's first call (its step
0) sees one token: it takes ``input_ids.shape[1]`` at that call as the start, as it does for a prompt.

Published settings (TIGER section 4, ``paper:`` in ``configs/baselines/tiger.yaml``): 4 encoder and 4 decoder
layers, 6 heads of 64, model dimension 128, MLP 1024, dropout 0.1, batch 256, lr 0.01 for 10k steps then
inverse square root decay, 200k steps, plus a hashed user-id token (2,000 buckets) in front of the history,
which is left out here (the splits' user ids are row labels, not features). The CPU preset is smaller; see
the YAML. MiniOneRec's Table 1 reports TIGER Industrial HR@10 0.1321.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from minirec.constraint import SidConstraint
from minirec.generation import beam_generation_config, generate_constrained
from minirec.sid import join_sid

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)


def sid_tokenizer(item_tokens: Mapping[int, Sequence[str]]):
    """A word-level tokenizer over the SID tokens (sorted, after ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2).

    ``"<a_1><b_2><c_3>"`` encodes to one id per SID token; anything else is ``<unk>``.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = sorted({token for sid in item_tokens.values() for token in sid})
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *tokens])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"<[a-z]_\d+>"), behavior="isolated"),
        pre_tokenizers.WhitespaceSplit(),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK)


class Tiger(nn.Module):
    """TIGER over one catalogue; ``loss`` for training, ``beam_search`` / ``rank`` for ranking.

    ``item_tokens``: item id -> SID tokens (``Catalogue.item_tokens``); ``sids``: the SIDs decoding may produce
    (default: every item's SID; pass ``Catalogue.valid_sids`` to use the info file's set, as evaluation does).
    """

    def __init__(self, num_items: int, item_tokens: Mapping[int, Sequence[str]], sids: Sequence[str] | None = None,
                 max_len: int = 10, d_model: int = 64, d_ff: int = 256, d_kv: int = 16, num_heads: int = 4,
                 num_layers: int = 2, num_decoder_layers: int = 2, dropout: float = 0.1,
                 relative_attention_num_buckets: int = 32):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        if sorted(item_tokens) != list(range(num_items)):
            raise ValueError(f"item ids must be 0..{num_items - 1}; got {len(item_tokens)} items")
        self.num_items, self.max_len = int(num_items), max_len
        self.tokenizer = sid_tokenizer(item_tokens)
        vocab = self.tokenizer.get_vocab()
        self.pad_id, self.eos_id = vocab[PAD], vocab[EOS]
        self.id_to_token = np.array(sorted(vocab, key=vocab.get), dtype=object)
        depth = max(len(tokens) for tokens in item_tokens.values())
        table = torch.full((num_items + 1, depth), self.pad_id, dtype=torch.long)  # row num_items: the pad item
        for item, tokens in item_tokens.items():
            table[item, : len(tokens)] = torch.tensor([vocab[token] for token in tokens])
        self.register_buffer("item_token_ids", table, persistent=False)
        config = T5Config(
            vocab_size=len(vocab), d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_heads=num_heads,
            num_layers=num_layers, num_decoder_layers=num_decoder_layers, dropout_rate=dropout,
            relative_attention_num_buckets=relative_attention_num_buckets, feed_forward_proj="relu",
            pad_token_id=self.pad_id, eos_token_id=self.eos_id, decoder_start_token_id=self.pad_id,
        )
        self.t5 = T5ForConditionalGeneration(config)
        sid_list = sorted(set(join_sid(t) for t in item_tokens.values()) if sids is None else set(sids))
        self.constraint = SidConstraint.from_token_sequences(
            [self.tokenizer(sid, add_special_tokens=False).input_ids for sid in sid_list], newline=[],
            eos_token_id=self.eos_id, pad_token_id=self.pad_id)
        if int(self.constraint.vocab_ids.max()) >= len(vocab) or (self.constraint.vocab_ids == vocab[UNK]).any():
            raise ValueError("a decodable SID has a token outside the catalogue's SID tokens")

    # -- tensors -------------------------------------------------------------------------------------------
    def encoder_inputs(self, history: torch.Tensor, lengths: torch.Tensor | None = None):
        """``(input_ids, attention_mask)``: the history's SID tokens, real tokens first, then EOS, then pads."""
        tokens = self.item_token_ids[history].flatten(1)  # (B, T * depth); pad items give pad tokens
        real = tokens.ne(self.pad_id)
        order = torch.sort((~real).to(torch.int8), dim=1, stable=True).indices  # real tokens first, order kept
        tokens = torch.cat([tokens.gather(1, order), torch.full_like(tokens[:, :1], self.pad_id)], 1)
        tokens.scatter_(1, real.sum(1, keepdim=True), self.eos_id)
        return tokens, tokens.ne(self.pad_id).long()

    def labels(self, targets: torch.Tensor) -> torch.Tensor:
        """The decoder targets: the target SID's tokens, EOS, then -100 (ignored) to the common width."""
        tokens = torch.cat([self.item_token_ids[targets], torch.full_like(targets[:, None], self.pad_id)], 1)
        tokens.scatter_(1, tokens.ne(self.pad_id).sum(1, keepdim=True), self.eos_id)
        return tokens.masked_fill(tokens.eq(self.pad_id), -100)

    def loss(self, history: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = self.encoder_inputs(history, lengths)
        return self.t5(input_ids=input_ids, attention_mask=attention_mask, labels=self.labels(targets)).loss

    # -- ranking -------------------------------------------------------------------------------------------
    def generation_config(self, num_beams: int):
        config = beam_generation_config(num_beams, self.constraint.max_new_tokens, self.eos_id, self.pad_id)
        config.decoder_start_token_id = self.pad_id
        return config

    @torch.no_grad()
    def beam_search(self, history: torch.Tensor, lengths: torch.Tensor, num_beams: int):
        """Constrained beam search: ``(sids, scores)``, each (batch, num_beams) nested lists, best first."""
        self.eval()
        input_ids, attention_mask = self.encoder_inputs(history, lengths)
        out = generate_constrained(self.t5, input_ids, attention_mask, self.constraint,
                                   self.generation_config(num_beams))
        generated = out.sequences[:, 1:].cpu().numpy()  # drop the decoder start token
        keep = (generated != self.pad_id) & (generated != self.eos_id)
        words = np.where(keep, self.id_to_token[generated], "")
        sids = ["".join(row) for row in words]
        batch = history.shape[0]
        scores = out.sequences_scores.float().cpu().view(batch, num_beams).tolist()
        return [sids[i * num_beams:(i + 1) * num_beams] for i in range(batch)], scores

    @torch.no_grad()
    def scores(self, history: torch.Tensor, lengths: torch.Tensor, item_chunk: int = 4096) -> torch.Tensor:
        """Exact log-likelihood of every item's SID (+ EOS) given each history: (batch, num_items).

        Teacher-forces all catalogue SIDs for every row (``batch x num_items`` decoder passes), so it is far
        slower than :meth:`beam_search`; items sharing a SID get the same score. Not used for ranking.
        """
        self.eval()
        input_ids, attention_mask = self.encoder_inputs(history, lengths)
        encoded = self.t5.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        items = torch.arange(self.num_items, device=history.device)
        out = torch.empty(history.shape[0], self.num_items)
        for start in range(0, self.num_items, item_chunk):
            labels = self.labels(items[start:start + item_chunk])
            decoder_input = self.t5._shift_right(labels)
            chunk = labels.shape[0]
            for row in range(history.shape[0]):
                logits = self.t5(encoder_outputs=(encoded[row:row + 1].expand(chunk, -1, -1),),
                                 attention_mask=attention_mask[row:row + 1].expand(chunk, -1),
                                 decoder_input_ids=decoder_input).logits
                logp = logits.log_softmax(-1).gather(2, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
                out[row, start:start + chunk] = (logp * labels.ne(-100)).sum(1).cpu()
        return out
