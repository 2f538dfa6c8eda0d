"""A tiny Qwen2-architecture model for CPU runs and tests: a pipeline-scale stand-in, not a pretrained LLM.

    python -m minirec.tiny_model --category Industrial_and_Scientific --output_dir models/tiny-industrial [--seed 0]
    mlflow run . -e tiny_model -P category=Industrial_and_Scientific --env-manager local

It has the shape of the real thing so every stage runs end to end on a laptop: a byte-level BPE tokenizer
(4,096 entries, ~3,800 merges) trained on the category's item texts and on the harness's own prompt templates
(``minirec.prompts``), a randomly initialised ``Qwen2ForCausalLM`` (2 layers, hidden 64), EOS = pad as in
upstream (docs/upstream.md 4.1), and the catalogue's SID tokens already added (1.5). It knows nothing
until SFT teaches it; results from it say whether the pipeline works, never what MiniOneRec achieves.

The same category, data and seed give byte-identical files. Nothing is logged to MLflow: the folder is an
input for ``sft --model``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Iterator

from dataclasses import dataclass

from minirec import prompts
from minirec.data import Catalogue, locate, read_split
from minirec.settings import StageSettings, setting
from minirec.stage import Recipe

EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 4096
PROMPT_ROWS = 2000  # train rows whose prompts enter the tokenizer corpus: every template, many histories
ARCHITECTURE = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
_SID_TOKEN = re.compile(r"<[a-z]_\d+>")


def _item_texts(catalogue: Catalogue) -> Iterator[str]:
    for item in sorted(catalogue.items):
        features = catalogue.items[item]
        yield from (features.get(key) or "" for key in ("title", "description", "brand"))


def _prompt_texts(category: str, catalogue: Catalogue, train_csv: Path) -> Iterator[str]:
    """Every template of ``minirec.prompts`` filled from the first train rows, with its target."""
    rows = read_split(train_csv).head(PROMPT_ROWS)
    rng = random.Random(42)
    for row in rows.itertuples(index=False):
        sids, titles = row.history_item_sid_list, row.history_item_title_list
        title = row.item_title
        item_sid = row.item_sid
        for prompt in (
            prompts.test_prompt(sids, item_sid),
            prompts.sft_sid_history(sids, item_sid),
            prompts.sft_sid_history_to_title(sids, title),
            prompts.sft_title_history_to_title(titles, title, category, rng),
            prompts.sft_title_history_to_sid(titles, item_sid, category),
            prompts.sft_title_to_sid(title, item_sid),
            prompts.sft_sid_to_title(item_sid, title),
            prompts.rl_title_history_to_sid(titles, item_sid),
            prompts.rl_title_to_sid(title, item_sid),
            prompts.rl_description_to_sid(catalogue.items[int(row.item_id)]["description"], item_sid),
        ):
            yield prompt.text + prompt.target


def train_tokenizer(texts: Iterator[str]):
    """A byte-level BPE tokenizer (GPT-2/Qwen style) trained on ``texts``, wrapped for ``transformers``.

    SID tokens are removed from the corpus: they become added tokens afterwards, so merges spent on them
    would be wasted.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((_SID_TOKEN.sub("", text) for text in texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, padding_side="left"
    )


def build_tiny_model(category: str, out_dir: str | os.PathLike, data_dir=None, seed: int = 0) -> Path:
    """Build, save (atomically, replacing ``out_dir``) and return the tiny model folder for ``category``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from minirec.models import add_sid_tokens, save_checkpoint

    files = locate(category, data_dir)
    catalogue = Catalogue.load(files)
    tokenizer = train_tokenizer(_iter_corpus(category, catalogue, files.train))
    eos = tokenizer.eos_token_id
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **ARCHITECTURE)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # The same call every real base model goes through; its mean-resizing draw uses the seeded RNG.
    add_sid_tokens(tokenizer, model, catalogue)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    # A model folder is meant to be shared: not mkdtemp's owner-only mode.
    return save_checkpoint(model, tokenizer, Path(out_dir), mode=0o755)


def _iter_corpus(category: str, catalogue: Catalogue, train_csv: Path) -> Iterator[str]:
    yield from _item_texts(catalogue)
    yield from _prompt_texts(category, catalogue, train_csv)


@dataclass
class TinyModelSettings(StageSettings):
    STAGE = "tiny_model"

    output_dir: str = setting("", "folder to write (replaced whole; default outputs/models/tiny-<category>-seed<seed>)")
    seed: int = setting(0, "weight-initialisation seed")


class TinyModelRecipe(Recipe):
    """``python -m minirec.tiny_model``: build the tiny model into a folder (no MLflow run)."""

    stage = "tiny_model"
    settings_class = TinyModelSettings
    module = "minirec.tiny_model"
    tracked = False

    def run(self) -> None:
        settings = self.settings
        out = settings.output_dir or str(Path("outputs") / "models" / f"tiny-{settings.category}-seed{settings.seed}")
        self.path = build_tiny_model(settings.category, out, data_dir=settings.data_dir or None, seed=settings.seed)

    def log(self) -> None:
        print(f"[tiny_model] tiny model for {self.settings.category} (seed {self.settings.seed}) written to "
              f"{self.path}", flush=True)


if __name__ == "__main__":
    from minirec.stage import main

    raise SystemExit(main(TinyModelRecipe))
