"""Stage settings: one typed dataclass per stage, resolved from defaults, a preset and overrides, then checked.

    python -m minirec.sft --preset paper --num_gpus 8 --print_config      # the resolved settings as YAML

Every stage declares its settings in ``minirec/<stage>/settings.py`` as a dataclass whose fields are made with
:func:`setting`: a default, what it means, where upstream takes the value from, and what is allowed (choices
or a range). Resolution order: the dataclass defaults, then the preset (``configs/<stage>/<name>.yaml`` or a YAML
path), then a base layer (the settings a resumed run was started with), then the overrides (command-line
options or ``mlflow run -P`` values; an empty value means "not given"). :meth:`Settings.validate` checks every
choice and range before any MLflow run or model exists, naming the setting, the value and what is allowed.

:class:`StageSettings` holds what every stage shares (category, data reference, output folder, preset, seed);
:class:`LaunchedSettings` adds the device and the processes of stages that can run on several GPUs or nodes.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from minirec.data.layout import CATEGORIES, PROJECT_ROOT
from minirec.errors import SettingsError

CONFIG_DIR = PROJECT_ROOT / "configs"
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")
SEED_MAX = 2**32 - 1  # every int setting named *seed without a range of its own is checked against 0..SEED_MAX


def setting(default: Any, help: str, *, upstream: str | None = None, choices: tuple | None = None,
            minimum: float | None = None, maximum: float | None = None, aliases: tuple[str, ...] = ()):
    """A settings field: its default, meaning (``help``), upstream source and allowed values."""
    metadata = {"help": help, "upstream": upstream, "choices": choices, "minimum": minimum, "maximum": maximum,
                "aliases": aliases}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_bool(value: Any, name: str = "value") -> bool:
    """``true``/``false`` (also 1/0, yes/no, any case); anything else is a :class:`SettingsError`."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in TRUE_WORDS + FALSE_WORDS:
        raise SettingsError(f"{name} expects true or false, not {value!r}")
    return text in TRUE_WORDS


def check_training_length(epochs_name: str, epochs: float, max_steps: int) -> None:
    """A :class:`SettingsError` for a training stage asked to take no step (``max_steps`` -1 defers to epochs)."""
    if max_steps == 0:
        raise SettingsError(f"max_steps = 0 trains nothing: expected -1 (train for {epochs_name}) or an integer >= 1")
    if max_steps == -1 and epochs == 0:
        raise SettingsError(f"{epochs_name} = 0 with max_steps = -1 trains nothing: expected {epochs_name} > 0 or "
                            "max_steps >= 1")


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a preset, a resolved-settings file)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"{path}: cannot read it as YAML ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, dict):
        raise SettingsError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


@dataclass
class Settings:
    """Base of every stage's settings; subclasses add fields with :func:`setting` and may override
    :meth:`check` (cross-field rules) and :meth:`derived` (values computed from the fields, logged too)."""

    STAGE: ClassVar[str] = ""

    # --- building -----------------------------------------------------------------------------------------

    @classmethod
    def specs(cls) -> dict[str, dataclasses.Field]:
        return {spec.name: spec for spec in dataclasses.fields(cls)}

    @classmethod
    def kinds(cls) -> dict[str, type]:
        """Each field's type (``bool``, ``int``, ``float``, ``str`` or ``list``)."""
        hints = typing.get_type_hints(cls)
        return {name: typing.get_origin(hints[name]) or hints[name] for name in cls.specs()}

    @classmethod
    def preset_dir(cls) -> Path:
        return CONFIG_DIR / cls.STAGE

    @classmethod
    def preset_path(cls, preset: str) -> Path:
        """A preset name (``tiny``, ``paper``) in ``configs/<stage>``, or a path to a YAML file."""
        path = Path(preset)
        if path.suffix in (".yaml", ".yml"):
            if not path.exists():
                raise SettingsError(f"preset file {path} does not exist")
            return path
        path = cls.preset_dir() / f"{preset}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in cls.preset_dir().glob("*.yaml"))
            raise SettingsError(f"no {cls.STAGE} preset {preset!r}; known: {', '.join(known) or 'none'}")
        return path

    @classmethod
    def convert(cls, name: str, value: Any, where: str = "") -> Any:
        """``value`` as field ``name``'s type; strings from a command line are parsed."""
        specs = cls.specs()
        if name not in specs:
            raise SettingsError(f"{where}unknown {cls.STAGE} setting {name!r}; known: {', '.join(specs)}")
        kind = cls.kinds()[name]
        if kind is bool:
            return parse_bool(value, name)
        if kind is list:
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            return list(value) if isinstance(value, (list, tuple)) else [value]
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}{name} expects {'an' if kind is int else 'a'} {kind.__name__}, "
                                f"not {value!r}") from None

    @classmethod
    def resolve(cls, preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None):
        """Defaults, then the preset's values, then ``base``, then ``overrides`` (``None`` and ``""`` skipped),
        validated."""
        values: dict[str, Any] = {}
        if preset:
            path = cls.preset_path(preset)
            for name, value in read_yaml_mapping(path).items():
                values[name] = cls.convert(name, value, f"{path}: ")
        for name, value in (base or {}).items():
            if name in cls.specs():
                values[name] = cls.convert(name, value, "resumed run: ")
        for name, value in (overrides or {}).items():
            if value is not None and value != "":
                values[name] = cls.convert(name, value)
        if preset and "preset" in cls.specs():
            values["preset"] = preset
        return cls(**values).validate()

    # --- checking -----------------------------------------------------------------------------------------

    def validate(self):
        """Check every field's choices and range, then the stage's own rules; returns ``self``."""
        for name, spec in self.specs().items():
            value, meta = getattr(self, name), spec.metadata
            choices = meta.get("choices")
            if choices:
                wrong = [v for v in (value if isinstance(value, list) else [value]) if v not in choices]
                if wrong:
                    raise SettingsError(f"{name} = {value!r} is not allowed: expected "
                                        f"{'some' if isinstance(value, list) else 'one'} of {', '.join(map(str, choices))}")
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{name} = {value!r} is out of range: expected a finite number")
            low, high = meta.get("minimum"), meta.get("maximum")
            if low is None and high is None and name.endswith("seed") and type(value) is int:
                low, high = 0, SEED_MAX  # numpy's seeds (transformers.set_seed seeds numpy too)
            if (low is not None and value < low) or (high is not None and value > high):
                raise SettingsError(f"{name} = {value!r} is out of range: expected {allowed_range(low, high)}")
        self.check()
        self.derived()  # derived values raise when the fields cannot produce them (e.g. a batch that does not split)
        return self

    def check(self) -> None:
        """Rules across fields; raise :class:`SettingsError` naming the settings and values involved."""

    def derived(self) -> dict[str, Any]:
        """Values computed from the fields (accumulation steps, batch totals), shown and logged with them."""
        return {}

    # --- showing ------------------------------------------------------------------------------------------

    def resolved(self) -> dict[str, Any]:
        """Every field, then every derived value: what ``--print_config`` prints and every run logs."""
        return {**dataclasses.asdict(self), **self.derived()}

    def command_line(self, module: str) -> str:
        """``python -m <module>`` with every setting that differs from its default: the run, as a command."""
        import shlex

        parts = [f"python -m {module}"]
        for name, spec in self.specs().items():
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            value = getattr(self, name)
            if value != default:
                shown = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() \
                    if isinstance(value, bool) else str(value)
                parts.append(f"--{name} {shlex.quote(shown)}")
        return " ".join(parts)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)

    def as_params(self) -> dict[str, str]:
        """The resolved settings as flat MLflow params (lists comma-separated)."""
        return {name: ",".join(map(str, value)) if isinstance(value, list) else str(value)
                for name, value in self.resolved().items()}


def allowed_range(low, high) -> str:
    kind = "a number" if isinstance(low if low is not None else high, float) else "an integer"
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    return f"{kind} >= {low}" if low is not None else f"{kind} <= {high}"


@dataclass
class StageSettings(Settings):
    """What every stage has: the category, where its data comes from, where it writes, its preset and seed."""

    category: str = setting("Industrial_and_Scientific", "Amazon category", choices=CATEGORIES)
    data_dir: str = setting("", "data directory in the upstream layout, or a sids run id / runs:/ URI whose "
                            "data/ artifacts hold one (empty: $MINIREC_DATA_DIR or the bundled data/amazon18)")
    output_dir: str = setting("", "folder of this run's outputs (empty: outputs/<stage>/<category>/<run id>, "
                              "never shared between runs)", aliases=("out",))
    preset: str = setting("", "preset these settings came from: a name in configs/<stage> or a YAML path")
    seed: int = setting(42, "seed of every random choice of the stage", upstream="TrainingArguments default, 42")


@dataclass
class LaunchedSettings(StageSettings):
    """A stage that can run on several processes: GPUs with DeepSpeed ZeRO-2, gloo processes on CPU, nodes."""

    device: str = setting("auto", "auto (cuda when visible), cpu or cuda", choices=("auto", "cpu", "cuda"))
    num_gpus: int = setting(1, "processes per machine: GPUs on cuda, gloo processes with device=cpu; "
                            "more than one re-launches the stage with accelerate", minimum=1, maximum=1024,
                            aliases=("num_processes",))
    num_machines: int = setting(1, "machines (nodes) taking part; run the same command on each", minimum=1)
    machine_rank: int = setting(0, "this machine's rank among num_machines (0 on the main node)", minimum=0)
    main_process_ip: str = setting("", "address of machine 0, needed with num_machines > 1")
    main_process_port: int = setting(29500, "port of machine 0's rendezvous", minimum=1, maximum=65535)

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_machines

    def check(self) -> None:
        if self.machine_rank >= self.num_machines:
            raise SettingsError(f"machine_rank = {self.machine_rank} is out of range: expected an integer from 0 "
                                f"to num_machines - 1 = {self.num_machines - 1}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise SettingsError(f"num_machines = {self.num_machines} needs main_process_ip (the address of machine 0)")
        if self.machine_rank > 0 and not self.output_dir:  # it makes no run, so no run id names a folder for it
            raise SettingsError(f"machine_rank = {self.machine_rank} needs output_dir: the folder shared with machine "
                                "0, where it finds the settings and checkpoints machine 0 writes")
