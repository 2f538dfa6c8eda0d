"""Stage presets: ``configs/<stage>/<name>.yaml`` (or a YAML path) read into a settings dataclass.

Shared by the ``sft`` and ``grpo`` configurations: defaults, then the preset's values, then the options given on
the command line (or ``-P name=value`` under ``mlflow run``), each converted to its field's type.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A preset or option that cannot be used, with the reason."""


def preset_path(directory: Path, preset: str, what: str) -> Path:
    """A preset name (``tiny``, ``paper``) in ``directory``, or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = directory / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ConfigError(f"no {what} preset {preset!r} (looked for {path}); known: {', '.join(known)}")
    return path


def read_preset(path: Path) -> dict[str, Any]:
    """The settings of a preset file, which must be a mapping."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def convert(fields: Mapping[str, dataclasses.Field], name: str, value: Any, what: str) -> Any:
    """``value`` as the type of field ``name`` (``"true"``/``"false"`` for booleans, commas for lists)."""
    if name not in fields:
        raise ConfigError(f"unknown {what} setting {name!r}; known: {', '.join(fields)}")
    field = fields[name]
    kind = list if field.default_factory is not dataclasses.MISSING else type(field.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name} expects true or false, not {value!r}")
        return text in ("true", "1", "yes")
    if kind is list:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else list(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} expects a {kind.__name__}, not {value!r}") from None


def layered_values(fields: Mapping[str, dataclasses.Field], directory: Path, what: str, preset: str | None,
                   overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The preset's values, then ``overrides`` (values left ``None`` are ignored), each converted to its field's
    type; the dataclass supplies the defaults for the rest."""
    values: dict[str, Any] = {}
    if preset:
        preset_values = read_preset(preset_path(directory, preset, what))
        values.update({name: convert(fields, name, value, what) for name, value in preset_values.items()})
    values.update({name: convert(fields, name, value, what) for name, value in (overrides or {}).items()
                   if value is not None})
    return values
