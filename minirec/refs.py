"""References to MLflow runs: what a run id looks like, and fetching a run with a one-line error.

    from minirec.refs import get_run, is_run_id
    run = get_run("3f2a...c9")        # NotFoundError naming the id and the tracking store when it is unknown

Every stage input that names data or a model accepts a path or an MLflow reference (docs/upstream.md has none:
upstream passes folders); models resolve through :mod:`minirec.models`, data directories through
:func:`minirec.data.layout.resolve_data_dir`.
"""

from __future__ import annotations

import re

from minirec.errors import NotFoundError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_RUN_REF = re.compile(r"^(?:runs:/)?([0-9a-f]{32})(?:/.*)?$")


def is_run_id(text: object) -> bool:
    """True for a 32-hex-digit MLflow run id."""
    return bool(RUN_ID.match(str(text)))


def run_id_in(ref: object) -> str | None:
    """The run id of ``<run id>`` or ``runs:/<run id>[/path]``, else ``None``."""
    match = _RUN_REF.match(str(ref))
    return match.group(1) if match else None


def get_run(run_id: str):
    """The MLflow run ``run_id``, or :class:`NotFoundError` naming it and the tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from minirec.tracking import configure_environment

    uri = configure_environment()
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException as error:
        raise NotFoundError(f"no MLflow run {run_id} in {uri} ({error.error_code})") from None
