"""The baselines stage: rankings from non-learned floors (``floors``) scored like a model's beams.

    python -m minirec.baselines --category Industrial_and_Scientific --method popularity
    mlflow run . -e baselines -P category=all -P method=all --env-manager local

Modules: ``floors`` (popularity, transition), ``settings`` and ``recipe`` (the stage).
"""

from minirec.baselines.floors import METHODS, rank, rank_sids

__all__ = ["METHODS", "rank", "rank_sids"]
