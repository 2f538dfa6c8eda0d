"""The baselines stage: the non-learned floors (``floors``) and the learned methods of the paper's Table 1
(:mod:`minirec.recsys`: SASRec, GRU4Rec, Caser, HSTU, TIGER), each ranking 50 SIDs per row, scored like a model's
beams.

    python -m minirec.baselines --category Industrial_and_Scientific --method popularity
    python -m minirec.baselines --category Industrial_and_Scientific --method sasrec          # CPU preset, minutes
    mlflow run . -e baselines -P category=all -P method=all --env-manager local

Modules: ``floors`` (popularity, transition; ``METHODS`` here are these two), ``settings`` and ``recipe`` (the
stage), ``artifacts`` (a learned run's checkpoints and model, and the CF reward loaded from a run).
"""

from minirec.baselines.floors import METHODS, rank, rank_sids

__all__ = ["METHODS", "rank", "rank_sids"]
