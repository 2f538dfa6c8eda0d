"""The one kind of error a user's mistake raises: :class:`UserError`, shown as one line and exit status 2.

    python -m minirec.evaluate --model nowhere --category Industrial_and_Scientific
    evaluate: error: model 'nowhere' is not a local folder, an MLflow run id or model URI, ...

Every stage's command line (:func:`minirec.stage.main`) catches :class:`UserError` before any traceback, prints
``<stage>: error: <message>`` and exits with status 2; anything else is a bug and keeps its traceback. Each
subclass names what was wrong (a setting and its allowed range, a file with its row and field, a run id).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the person running a stage: the message says what, where, and what is allowed."""


class SettingsError(UserError, ValueError):
    """A setting or preset that cannot be used: names the setting, the value and what is allowed."""


class NotFoundError(UserError, LookupError):
    """A run id, model URI, path or checkpoint that names nothing usable."""


class DataInvalid(UserError):
    """The data failed validation; the failures were printed (file, line, column, value) before this."""

    exit_status = 1
