"""Command lines built from a settings dataclass: one option per field, ``--preset`` and ``--print_config``.

    python -m minirec.grpo --preset paper --num_gpus 8 --print_config

Each field ``name`` is accepted as ``--name`` and ``--name-with-hyphens`` (and its aliases); booleans take
true/false, lists comma-separated values, and an empty value means "not given" (MLproject parameters default
to ``""`` so presets stay in charge). The help text of every option gives its meaning, upstream source,
allowed values and built-in default.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Sequence

from minirec.settings import Settings


def option_flags(name: str, aliases: Sequence[str] = ()) -> list[str]:
    names = [name, *aliases]
    return list(dict.fromkeys(flag for n in names for flag in (f"--{n}", f"--{n.replace('_', '-')}")))


def help_text(spec: dataclasses.Field) -> str:
    meta = spec.metadata
    default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
    parts = [meta["help"]]
    if meta.get("choices"):
        parts.append(f"one of {', '.join(map(str, meta['choices']))}")
    if meta.get("upstream"):
        parts.append(f"upstream: {meta['upstream']}")
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    return "; ".join(parts) + f" (default: {shown!r})"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage block is what ``--help`` is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(settings_class: type[Settings], prog: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Booleans take true/false; lists are comma-separated; an empty value "
                                            "keeps the preset's.")
    if "preset" in settings_class.specs():
        parser.add_argument("--preset", default=None,
                            help=f"preset name in configs/{settings_class.STAGE} or a YAML path")
    parser.add_argument("--print_config", "--print-config", action="store_true",
                        help="print the fully resolved settings as YAML (derived values included) and exit")
    for name, spec in settings_class.specs().items():
        if name == "preset":
            continue
        parser.add_argument(*option_flags(name, spec.metadata.get("aliases", ())), dest=name, default=None,
                            metavar=name.upper(), help=help_text(spec))
    return parser


def overrides_of(args: argparse.Namespace, settings_class: type[Settings]) -> dict[str, str]:
    """The options actually given (``None`` and ``""`` mean not given)."""
    return {name: value for name in settings_class.specs()
            if name != "preset" and (value := getattr(args, name, None)) not in (None, "")}
