"""The learned baselines of the paper's Table 1: SASRec, GRU4Rec, Caser, HSTU (item ids) and TIGER (SIDs).

Library use (the ``baselines`` entry point wires these; nothing here touches MLflow)::

    from minirec.recsys import load_settings, train_recommender, rank_split
    settings = load_settings("sasrec")                               # configs/baselines/sasrec.yaml, CPU preset
    result = train_recommender("sasrec", settings, files, catalogue, out_dir, on_epoch=log_to_mlflow)
    frame = rank_split(result.model, read_split(files.test), catalogue)   # beams format, 50 distinct SIDs
    scores = score_predictions(frame, catalogue)

Modules: :mod:`~minirec.recsys.sequences` (histories as tensors), :mod:`~minirec.recsys.sasrec`,
:mod:`~minirec.recsys.gru4rec`, :mod:`~minirec.recsys.caser`, :mod:`~minirec.recsys.hstu`,
:mod:`~minirec.recsys.tiger` (the models, each docstring naming its source and hyper-parameters),
:mod:`~minirec.recsys.train` (the loop), :mod:`~minirec.recsys.rank` (rankings),
:mod:`~minirec.recsys.cf_reward` (upstream's SASRec reward for GRPO).
"""

from minirec.recsys.cf_reward import CfReward
from minirec.recsys.rank import rank_scores, rank_split
from minirec.recsys.sequences import Sequences
from minirec.recsys.settings import (
    CONFIG_DIR,
    ID_METHODS,
    METHODS,
    PRESETS,
    RecSettings,
    SettingsError,
    build,
    load_settings,
)
from minirec.recsys.train import TrainResult, evaluate, load_model, train_recommender

__all__ = [
    "CONFIG_DIR",
    "CfReward",
    "ID_METHODS",
    "METHODS",
    "PRESETS",
    "RecSettings",
    "Sequences",
    "SettingsError",
    "TrainResult",
    "build",
    "evaluate",
    "load_model",
    "load_settings",
    "rank_scores",
    "rank_split",
    "train_recommender",
]
