"""Settings of the learned baselines: ``configs/baselines/<method>.yaml`` read into :class:`RecSettings`.

Each YAML's top level is the CPU preset (what ``preset="cpu"`` loads); its ``paper:`` mapping holds the
published settings and its ``tiny:`` mapping a smoke-test cut (a minute or two on CPU), each laid over the top
level by ``preset="paper"`` / ``preset="tiny"`` (``model:`` merged key by key). Overrides
(``load_settings(..., overrides={"epochs": 3})`` or ``{"model.hidden": 64}``; strings from a command line are
read as numbers where they are numbers) come last.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from minirec import errors

METHODS = ("sasrec", "gru4rec", "caser", "hstu", "tiger")
ID_METHODS = ("sasrec", "gru4rec", "caser", "hstu")  # item-id models: full-catalogue logits
PRESETS = ("cpu", "tiny", "paper")
LOSSES = ("bce", "ce", "seq2seq")
OPTIMIZERS = ("adam", "adamw")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "baselines"


class SettingsError(errors.SettingsError):
    """A baseline config or override that cannot be used, with the reason (a user's mistake: one line, exit 2)."""


@dataclass
class RecSettings:
    """Everything a baseline run depends on; ``model`` holds the module's constructor arguments.

    ``loss``: ``bce`` = upstream's BCE on the target and one uniform negative != target; ``ce`` = softmax
    cross-entropy over the whole catalogue; ``seq2seq`` = TIGER's token cross-entropy. ``optimizer``: ``adam``
    is ``torch.optim.Adam`` with ``weight_decay`` as L2 (upstream), ``adamw`` decoupled decay. Early stopping:
    evaluation on valid every ``eval_every`` epochs; the run stops once more than ``patience`` evaluations in a
    row have not improved valid NDCG@20 (upstream's ``early_stop > args.early_stop``). ``train_rows`` /
    ``valid_rows``: use only the first rows of a split (0: all). ``eval_beams``: beams of TIGER's valid
    evaluation (its ranking uses ``k`` beams).
    """

    method: str
    seed: int = 1
    max_len: int = 10
    epochs: int = 500
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    loss: str = "bce"
    eval_every: int = 1
    patience: int = 20
    eval_batch_size: int = 1024
    eval_beams: int = 20
    train_rows: int = 0
    valid_rows: int = 0
    model: dict = field(default_factory=dict)
    preset: str = ""

    def __post_init__(self):
        if self.method not in METHODS:
            raise SettingsError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.loss not in LOSSES:
            raise SettingsError(f"loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if (self.loss == "seq2seq") != (self.method == "tiger"):
            raise SettingsError(f"{self.method}: loss seq2seq is TIGER's and only TIGER's, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SettingsError(f"optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        for name in ("max_len", "epochs", "batch_size", "eval_every", "eval_batch_size", "eval_beams"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("patience", "train_rows", "valid_rows"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (all but length and patience)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("epochs", "patience", "preset")}


_FIELDS = {f.name: f for f in dataclasses.fields(RecSettings)}


def _typed(name: str, value: Any) -> Any:
    if name not in _FIELDS or name == "method":
        raise SettingsError(f"unknown baseline setting {name!r}; known: {', '.join(n for n in _FIELDS if n != 'method')}")
    if name == "model":
        if not isinstance(value, Mapping):
            raise SettingsError(f"model must be a mapping of constructor arguments, got {value!r}")
        return dict(value)
    kind = type(_FIELDS[name].default)
    if kind is bool or isinstance(value, bool):
        raise SettingsError(f"{name}: booleans are not settings here, got {value!r}")
    try:
        if kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} expects a {kind.__name__}, not {value!r}") from None


def scalar(text: Any) -> Any:
    """A command-line value as a number where it reads as one (``"64"`` -> 64, ``"1e-3"`` -> 0.001), else as YAML."""
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _layer(values: dict[str, Any], layer: Mapping[str, Any], where: str) -> None:
    for name, value in layer.items():
        if name in PRESETS:
            continue
        if "." in name:  # model.hidden: 64
            head, key = name.split(".", 1)
            if head != "model":
                raise SettingsError(f"{where}: only model.<argument> may be dotted, got {name!r}")
            values.setdefault("model", {})[key] = scalar(value)
            continue
        typed = _typed(name, value)
        values[name] = {**values.get("model", {}), **typed} if name == "model" else typed


def config_path(method: str, config_dir: str | Path | None = None) -> Path:
    return Path(config_dir or CONFIG_DIR) / f"{method}.yaml"


def load_settings(method: str, preset: str = "cpu", overrides: Mapping[str, Any] | None = None,
                  config_dir: str | Path | None = None) -> RecSettings:
    """``configs/baselines/<method>.yaml`` as :class:`RecSettings` (``preset`` ``cpu``, ``tiny`` or ``paper``)."""
    if method not in METHODS:
        raise SettingsError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise SettingsError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    path = config_path(method, config_dir)
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    values: dict[str, Any] = {}
    _layer(values, loaded, str(path))
    if preset != "cpu":
        section = loaded.get(preset)
        if not isinstance(section, Mapping):
            raise SettingsError(f"{path}: no {preset}: section")
        _layer(values, section, f"{path} ({preset})")
    if overrides:
        _layer(values, {k: v for k, v in overrides.items() if v is not None}, "overrides")
    return RecSettings(method=method, preset=f"{path.name}:{preset}", **values)


def build(method: str, num_items: int, config: RecSettings | Mapping[str, Any] | None = None, catalogue=None):
    """A fresh (randomly initialised) module for ``method`` over items ``0..num_items-1``.

    ``config``: a :class:`RecSettings` (its ``model`` and ``max_len``) or the constructor arguments. TIGER also
    needs the ``catalogue`` (its SID tokens and the SIDs decoding may produce).
    """
    if isinstance(config, RecSettings):
        if config.method != method:
            raise SettingsError(f"settings are for {config.method}, not {method}")
        kwargs = {"max_len": config.max_len, **config.model}
    else:
        kwargs = dict(config or {})
    if method == "sasrec":
        from minirec.recsys.sasrec import SASRec as cls
    elif method == "gru4rec":
        from minirec.recsys.gru4rec import GRU4Rec as cls
    elif method == "caser":
        from minirec.recsys.caser import Caser as cls
    elif method == "hstu":
        from minirec.recsys.hstu import HSTU as cls
    elif method == "tiger":
        from minirec.recsys.tiger import Tiger

        if catalogue is None:
            raise SettingsError("tiger needs the catalogue (its SID tokens) to be built")
        return Tiger(num_items, catalogue.item_tokens, sids=sorted(catalogue.valid_sids), **kwargs)
    else:
        raise SettingsError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    try:
        return cls(num_items, **kwargs)
    except TypeError as error:
        raise SettingsError(f"{method}: bad model arguments {kwargs}: {error}") from None
