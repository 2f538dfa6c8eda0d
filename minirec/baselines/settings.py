"""Settings of the baselines stage: which method(s), which category(ies), which split, the learned methods' preset.

    python -m minirec.baselines --category all --method all --print_config
    python -m minirec.baselines --method sasrec --preset cpu --epochs 50 --hp lr=0.002,model.dropout=0.2 --print_config

``method`` is one method, several comma-separated, or ``all``: the two floors plus the cheap learned methods
(``popularity, transition, sasrec, gru4rec, caser``: a few minutes in all on CPU). HSTU and TIGER are never in
``all``; name them (``--method hstu,tiger``). Each method of each category is its own run.

The learned methods' hyper-parameters come from ``configs/baselines/<method>.yaml``: ``preset`` picks its
section (``cpu``, the default: the top level; ``tiny``: a smoke test; ``paper``: the published settings, for
GPUs), then ``epochs``, ``patience``, ``train_rows``, ``valid_rows``, ``seed`` (-1: the preset's) and ``hp``
(any other ``name=value``, ``model.<argument>=value`` for the model's constructor) override it. The resolved
hyper-parameters are shown and logged as ``hp.<name>`` (``hp.model.<argument>``). The floors take none of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minirec.baselines.floors import METHODS as FLOORS
from minirec.data.layout import CATEGORIES
from minirec.errors import SettingsError
from minirec.recsys.settings import METHODS as LEARNED
from minirec.recsys.settings import PRESETS, config_path
from minirec.settings import StageSettings, setting

METHODS = (*FLOORS, *LEARNED)
ALL = (*FLOORS, "sasrec", "gru4rec", "caser")  # method=all: the floors and the learned methods that are cheap on CPU
DEFAULT_PRESET = "cpu"
# The row names of the learned methods in the paper's Table 1 (reports/paper_table1.csv).
PAPER_METHOD = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser", "hstu": "HSTU", "tiger": "TIGER"}


@dataclass
class BaselineSettings(StageSettings):
    STAGE = "baselines"

    category: str = setting("all", "category to rank, or all (one run per category and method)",
                            choices=(*CATEGORIES, "all"))
    method: str = setting("all", f"baseline(s) to run, comma-separated: {', '.join(METHODS)}; all = "
                          f"{', '.join(ALL)} (the floors and the learned methods that take minutes on CPU; "
                          "hstu and tiger only when named)")
    preset: str = setting("", "learned methods: the section of configs/baselines/<method>.yaml to train with: "
                          "cpu (empty: the default), tiny (a smoke test) or paper (the published settings, "
                          "for GPUs)", choices=("", *PRESETS))
    split: str = setting("test", "rows to rank (learned methods train on train and select on valid either way)",
                         choices=("valid", "test"))
    num_beams: int = setting(50, "ranking length (SIDs per row)", minimum=1, maximum=1000)
    seed: int = setting(-1, "learned methods: seed of initialisation, data order and negatives (-1: the "
                        "preset's, upstream's 1); the floors are deterministic", minimum=-1)
    epochs: int = setting(-1, "learned methods: maximum epochs (-1: the preset's)", minimum=-1)
    patience: int = setting(-1, "learned methods: evaluations without a better valid NDCG@20 before stopping "
                            "(-1: the preset's)", minimum=-1)
    train_rows: int = setting(-1, "learned methods: train on the first N train rows (0: all; -1: the preset's)",
                              minimum=-1)
    valid_rows: int = setting(-1, "learned methods: select on the first N valid rows (0: all; -1: the preset's)",
                              minimum=-1)
    hp: list = setting([], "learned methods: further hyper-parameters as name=value, comma-separated "
                       "(lr=0.002,batch_size=256,model.hidden=64; see configs/baselines/<method>.yaml)")
    device: str = setting("auto", "learned methods: auto (cuda when visible), cpu or cuda",
                          choices=("auto", "cpu", "cuda"))
    threads: int = setting(1, "torch threads on CPU (0: torch's default); the models are small, so a second "
                           "thread mostly waits on shared cores", minimum=0)
    evaluate_untrained: bool = setting(True, "learned methods: also log the untrained model's valid metrics "
                                       "(untrained_valid_*)")
    checkpoint_seconds: float = setting(60.0, "learned methods: upload the training checkpoint as an artifact "
                                        "at most every N seconds (0: after every evaluation); the last one is "
                                        "always uploaded", minimum=0.0)
    log_model: bool = setting(True, "learned methods: log the best model (state dict and settings) as model/")
    resume_from: str = setting("", "run id of an interrupted (or finished) learned-baseline run to continue from "
                               "its latest checkpoint artifact; a larger epochs or patience extends it")

    # --- resolution --------------------------------------------------------------------------------------

    @classmethod
    def resolve(cls, preset=None, overrides=None, base=None):
        # ``preset`` names a section of each method's YAML, not a file of this stage's settings.
        values = dict(overrides or {})
        if preset:
            values["preset"] = preset
        resolved = super().resolve(None, values, base)
        return resolved.for_method(resolved.method) if len(resolved.methods()) == 1 else resolved

    def preset_path(self, preset: str) -> Path:
        """The method's YAML (every preset of it), which the run logs as ``config/<method>.yaml``."""
        return config_path(self.method)

    def methods(self) -> tuple[str, ...]:
        names = [part.strip() for part in self.method.split(",") if part.strip()]
        expanded = [one for name in names for one in (ALL if name == "all" else (name,))]
        return tuple(dict.fromkeys(expanded))

    @property
    def learned(self) -> bool:
        return self.method in LEARNED

    def for_method(self, method: str) -> "BaselineSettings":
        """These settings for one method: the learned ones get their preset, the floors none."""
        preset = (self.preset or DEFAULT_PRESET) if method in LEARNED else ""
        return dataclasses.replace(self, method=method, preset=preset).validate()

    def overrides(self) -> dict[str, Any]:
        """The hyper-parameters given here, over the preset's."""
        values: dict[str, Any] = {}
        for item in self.hp:
            name, equals, value = item.partition("=")
            if not equals or not name.strip():
                raise SettingsError(f"hp entry {item!r} is not name=value")
            values[name.strip()] = value.strip()
        for name in ("seed", "epochs", "patience", "train_rows", "valid_rows"):
            if getattr(self, name) >= 0:
                values[name] = getattr(self, name)
        return values

    def rec_settings(self):
        """The learned method's :class:`~minirec.recsys.RecSettings`: its preset, then the overrides."""
        from minirec.recsys import load_settings
        from minirec.recsys.settings import SettingsError as RecSettingsError

        if not self.learned:
            raise SettingsError(f"{self.method} is not a learned method")
        try:
            return load_settings(self.method, self.preset or DEFAULT_PRESET, self.overrides())
        except RecSettingsError as error:
            raise SettingsError(f"{self.method}: {error}") from None

    # --- checks ------------------------------------------------------------------------------------------

    def check(self) -> None:
        methods = self.methods()
        unknown = [name for name in methods if name not in METHODS]
        if unknown or not methods:
            raise SettingsError(f"method = {self.method!r} is not allowed: expected some of "
                                f"{', '.join(METHODS)}, or all")
        if self.resume_from and len(methods) != 1:
            raise SettingsError(f"resume_from continues one run; method = {self.method!r} names {len(methods)}")
        if self.resume_from and self.category == "all":
            raise SettingsError("resume_from continues one run; category = 'all' names several")
        if self.resume_from and not self.learned:
            raise SettingsError(f"resume_from continues a learned baseline's training; {self.method} has none")
        for method in methods:
            if method in LEARNED:
                dataclasses.replace(self, method=method).rec_settings()  # a bad preset or hp fails here

    def derived(self) -> dict[str, Any]:
        if not self.learned:
            return {}
        values = self.rec_settings().to_dict()
        model = values.pop("model")
        for known in ("method", "preset"):  # the stage's own settings already say these
            values.pop(known)
        return {"paper_method": PAPER_METHOD[self.method],
                **{f"hp.{name}": value for name, value in values.items()},
                **{f"hp.model.{name}": value for name, value in model.items()}}
