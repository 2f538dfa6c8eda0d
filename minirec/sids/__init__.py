"""The ``sids`` stage: item text -> embeddings -> semantic IDs, and what a SID scheme costs (docs/upstream.md 3).

    python -m minirec.sids --category Industrial_and_Scientific --method rqkmeans
    python -m minirec.sids --category Office_Products --method rqvae --epochs 10000 \\
        --embedding-model Qwen/Qwen3-Embedding-4B          # the paper's route, on a GPU with the model cached

Modules: :mod:`~minirec.sids.text` (item text), :mod:`~minirec.sids.embed` (cached embeddings),
:mod:`~minirec.sids.quantise` (rqkmeans, rqkmeans_constrained, rqvae), :mod:`~minirec.sids.writer` (the new
data directory), :mod:`~minirec.sids.stats` and :mod:`~minirec.sids.report` (statistics, report, plot),
:mod:`~minirec.sids.settings` and :mod:`~minirec.sids.recipe` (the stage). A sids run id works as
``--data_dir`` of every later stage (:func:`minirec.data.layout.resolve_data_dir`).
"""
