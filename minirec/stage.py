"""Every stage's command line and run life-cycle: settings -> one tracked run -> ``setup``, ``run``, ``log``.

    python -m minirec.<stage> [--preset NAME] [--print_config] [--<setting> VALUE ...]
    mlflow run . -e <stage> -P <setting>=VALUE ... --env-manager local

A stage is a :class:`Recipe` (the torchtune shape): its settings dataclass, what it reads, and three steps.
:func:`main` does the rest the same way for every stage:

1. parse the options into settings (preset, then a resumed run's settings, then the options) and check them;
   ``--print_config`` prints them as YAML and stops, before any model or run exists;
2. resolve the stage's inputs (data files, the model or run it starts from); a mistake in any of it is a
   :class:`~minirec.errors.UserError`: one line ``<stage>: error: ...``, exit status 2, no run left behind;
3. open the stage's MLflow run (:func:`minirec.tracking.stage_run`), whose id names the output folder
   ``outputs/<stage>/<category>/<run id>``;
4. on one process, ``setup``, ``run`` and ``log``; on several (``num_gpus`` > 1), re-launch the stage with
   ``accelerate launch`` (:mod:`minirec.launch`): every launched process reads the exact settings the run
   logged, rank 0 logs into the run, and the launcher marks the run FAILED if any process failed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Sequence

from minirec.cli import build_parser, overrides_of
from minirec.devices import inside_launch, is_main_process, leave_process_group
from minirec.errors import DataInvalid, UserError
from minirec.settings import LaunchedSettings, Settings, read_yaml_mapping
from minirec.tracking import DATA_ROLES, adopt_outer_run_as_parent, attached_run, configure_environment, stage_run

SETTINGS_ENV = "MINIREC_SETTINGS"  # the resolved settings file a launcher hands to the processes it starts


class Recipe:
    """One stage. Subclasses set the class attributes and implement ``setup``, ``run`` and ``log``."""

    stage: ClassVar[str]
    settings_class: ClassVar[type[Settings]]
    module: ClassVar[str]  # ``python -m <module>`` runs it
    default_preset: ClassVar[str | None] = None
    system_metrics: ClassVar[bool] = False  # training and evaluation runs log CPU/GPU metrics
    roles: ClassVar[Sequence[str]] = DATA_ROLES  # data files recorded on the run
    splits: ClassVar[Sequence[str]] = ()  # splits logged as MLflow dataset inputs
    experiment: ClassVar[str | None] = None  # default: the category's
    tracked: ClassVar[bool] = True  # False: a utility that makes no MLflow run (the tiny model builder)

    def __init__(self, settings: Settings):
        self.settings = settings
        self.mlflow_run = None  # the active run, on the process that logs

    # --- before the run: inputs, names, tags ---------------------------------------------------------------

    @classmethod
    def base_settings(cls, overrides: dict[str, str]) -> dict[str, Any]:
        """Settings to start from below the preset and options; resumable stages return the resumed run's."""
        ref = overrides.get("resume_from")
        if not ref or "resume_from" not in cls.settings_class.specs():
            return {}
        from minirec.resume import resumed_settings

        return resumed_settings(ref)

    @classmethod
    def expand(cls, settings: Settings) -> list[Settings]:
        """The settings of each run one command makes: one per category for ``category=all``."""
        return expand_categories(cls, settings)

    def complete(self) -> None:
        """Resolve what the settings name (data, models, runs), raising :class:`UserError` for bad input.

        Runs once, in the process that owns the run, before it starts; launched processes do not run it, so
        whatever they need from it must be written into the settings (which they receive)."""

    def files(self):
        """The category's data files this run reads (logged), or ``None``; validated before the run starts
        (:func:`minirec.data.validate.require_valid`, free when the same bytes passed before)."""
        if getattr(self, "_files", None) is None:
            from minirec.data import locate
            from minirec.data.validate import require_valid

            files = locate(self.settings.category, self.settings.data_dir or None)
            require_valid(files)
            self._files = files
        return self._files

    def source(self) -> str:
        return str(getattr(self.settings, "data_dir", "") or "bundled")

    def stage_tag(self) -> str:
        return self.stage

    def run_name(self) -> str:
        preset = getattr(self.settings, "preset", "") or "custom"
        return f"{self.stage}-{Path(preset).stem}-{self.settings.category}"

    def tags(self) -> dict[str, str]:
        return {}

    def parent_run_id(self) -> str | None:
        return None

    def prepare(self) -> None:
        """Once per machine, inside the run, before any process works (build a model, fetch a checkpoint)."""

    # --- the work --------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load data and models (every process)."""

    def run(self) -> None:
        """Compute (every process)."""

    def log(self) -> None:
        """Write results to the active MLflow run and print the stage's summary (main process only)."""



class ResumedInNewRun:
    """Mixin of the stages whose ``resume_from`` continues an old run in a new one (sft, grpo, baselines): the
    reference is checked before any run exists; inside the new run the old one is marked KILLED if it was left
    RUNNING and its newest intact checkpoint is fetched (:meth:`fetch_resumed`); the new run is the old one's
    child and is tagged ``resumed_from``. (evaluate continues the old run itself.)"""

    def complete(self) -> None:
        if self.settings.resume_from:
            from minirec.resume import check_resume_reference

            check_resume_reference(self.settings.resume_from)
        super().complete()

    def prepare(self) -> None:
        if self.settings.resume_from:
            from minirec.resume import mark_dead

            mark_dead(self.settings.resume_from)
            self.fetch_resumed()
        super().prepare()

    def fetch_resumed(self) -> None:
        """The old run's newest intact Trainer checkpoint into this run's output folder (once per machine)."""
        from minirec.resume import fetch_for_launch

        settings = self.settings
        fetch_for_launch(settings.resume_from, settings.output_dir, settings.machine_rank)

    def tags(self) -> dict[str, str]:
        resumed = self.settings.resume_from
        return {**super().tags(), "resumed_from": resumed} if resumed else super().tags()

    def parent_run_id(self) -> str | None:
        return self.settings.resume_from or super().parent_run_id()

def parse(recipe_class: type[Recipe], argv: Sequence[str]) -> tuple[Settings, bool]:
    """``(settings, print_config)`` from the command line."""
    settings_class = recipe_class.settings_class
    doc = sys.modules[recipe_class.__module__].__doc__
    parser = build_parser(settings_class, prog=f"python -m {recipe_class.module}", description=doc)
    args = parser.parse_args(list(argv))
    overrides = overrides_of(args, settings_class)
    base = recipe_class.base_settings(overrides)
    preset = getattr(args, "preset", None) or base.get("preset") or recipe_class.default_preset
    return settings_class.resolve(preset, overrides, base), args.print_config


def settings_from_file(settings_class: type[Settings], path: str | Path) -> Settings:
    """The settings a launcher resolved and logged, for the processes it started."""
    fields = settings_class.specs()
    values = {name: value for name, value in read_yaml_mapping(Path(path)).items() if name in fields}
    return settings_class(**values).validate()


def write_settings(settings: Settings) -> Path:
    """The resolved settings as ``<output_dir>/config/resolved.yaml`` (the file launched processes read)."""
    from minirec.atomic import write_text

    return write_text(Path(settings.output_dir) / "config" / "resolved.yaml", settings.to_yaml())


def execute(recipe_class: type[Recipe], argv: Sequence[str]) -> list[Recipe]:
    """Parse, then run one recipe per category; returns them (each with its ``mlflow_run``). Raises
    :class:`UserError` for bad input; ``--print_config`` prints the settings and runs nothing."""
    settings, print_config = parse(recipe_class, argv)
    if print_config:
        print(settings.to_yaml(), end="")
        return []
    configure_environment(open_store=False)  # a server must answer now; a sqlite store opens at its first use
    recipes = [recipe_class(one) for one in recipe_class.expand(settings)]
    if len(recipes) > 1:
        adopt_outer_run_as_parent()  # mlflow run's run becomes the parent of the command's runs
    invalid: list[DataInvalid] = []
    for recipe in recipes:
        try:
            _run(recipe)
        except DataInvalid as error:  # category=all checks every category before it fails
            if len(recipes) == 1:
                raise
            print(f"{recipe_class.stage}: error: {error}", file=sys.stderr, flush=True)
            invalid.append(error)
    if invalid:
        raise DataInvalid(f"{len(invalid)} of {len(recipes)} categories failed validation")
    return recipes


def main(recipe_class: type[Recipe], argv: Sequence[str] | None = None) -> int:
    """Run a stage from its command line; returns the exit status (2 for a user's mistake)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from minirec.logs import quiet_third_parties

    quiet_third_parties()
    try:
        if inside_launch() and os.environ.get(SETTINGS_ENV):
            return _launched_process(recipe_class)
        execute(recipe_class, argv)
    except UserError as error:
        print(f"{recipe_class.stage}: error: {error}", file=sys.stderr, flush=True)
        return getattr(error, "exit_status", 2)
    return 0


def expand_categories(recipe_class: type[Recipe], settings: Settings) -> list[Settings]:
    """``category=all`` (where a stage allows it) becomes one settings object, and one run, per category."""
    from minirec.data import CATEGORIES

    if getattr(settings, "category", None) != "all" or recipe_class.experiment is not None:
        return [settings]
    return [dataclasses.replace(settings, category=category) for category in CATEGORIES]


def _run(recipe: Recipe) -> None:
    settings = recipe.settings
    recipe.complete()
    launched = isinstance(settings, LaunchedSettings) and settings.world_size > 1
    if launched and settings.machine_rank > 0:
        return _follow(recipe)  # a secondary machine: its processes work, machine 0's launcher keeps the run
    if not recipe.tracked:
        recipe.setup()
        recipe.run()
        recipe.log()
        return
    files = recipe.files()
    with stage_run(settings, stage=recipe.stage_tag(), source=recipe.source(), run_name=recipe.run_name(),
                   entry_point=recipe.stage, tags=recipe.tags(), files=files, roles=recipe.roles,
                   splits=recipe.splits if files is not None else (), system_metrics=recipe.system_metrics,
                   parent_run_id=recipe.parent_run_id(), experiment=recipe.experiment,
                   module=recipe.module) as run:
        recipe.mlflow_run = run
        recipe.prepare()
        if not launched:
            recipe.setup()
            recipe.run()
            recipe.log()
            return
        _launch(recipe, {"MLFLOW_RUN_ID": run.info.run_id})


def _follow(recipe: Recipe) -> None:
    recipe.prepare()
    _launch(recipe, {})


def _launch(recipe: Recipe, extra_env: dict[str, str]) -> None:
    from minirec.launch import relaunch

    env = {**os.environ, **extra_env, SETTINGS_ENV: str(write_settings(recipe.settings))}
    code = relaunch(recipe.module, [], recipe.settings, env)
    if code:
        raise SystemExit(code)  # the run ends FAILED; the processes printed why


def _launched_process(recipe_class: type[Recipe]) -> int:
    """A process started by the launcher: the launcher's settings, rank 0 logging into the launcher's run."""
    recipe = recipe_class(settings_from_file(recipe_class.settings_class, os.environ[SETTINGS_ENV]))
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if is_main_process() and run_id:
        with attached_run(run_id) as run:
            recipe.mlflow_run = run
            recipe.setup()
            recipe.run()
            recipe.log()
    else:
        recipe.setup()
        recipe.run()
    leave_process_group()
    return 0
