"""User errors at the command line: one paragraph, no traceback (unless ``HYDRA_FULL_ERROR=1``).

A bad file, a corrupt checkpoint, a bad value in the config or a training that diverged is the user's to fix,
and every such error already says what to fix (the file, the field, the fix). The entry points
(``python -m stlm.train | forecast | evaluate | stream | compare``, all through :func:`stlm.cli.run_hydra_job`)
run their job inside :func:`reported_as_user_error`, which turns these errors into Hydra's compact errors:
Hydra prints the message and exits with status 1. ``HYDRA_FULL_ERROR=1`` shows the full traceback, for debugging. Errors of any other
kind (bugs) keep their traceback.
"""

from __future__ import annotations

import pickle
from contextlib import contextmanager

from hydra.errors import CompactHydraException


class StlmUserError(Exception):
    """Base of stlm's own errors that are not ``ValueError``/``OSError`` (store conflicts, missing kernels)."""


class UserError(CompactHydraException):
    """What the entry points raise for a user error: Hydra prints ``str(err)`` without a traceback."""


# ValueError: DataValidationError, CheckpointError, ConfigError, ForecastFileError and every bad argument;
# OSError: missing or unreadable files; FloatingPointError: a non-finite loss or gradient in training.
USER_ERRORS = (StlmUserError, ValueError, OSError, FloatingPointError, pickle.UnpicklingError)


@contextmanager
def reported_as_user_error():
    """Re-raise user errors (:data:`USER_ERRORS`) as :class:`UserError` with the original message."""
    try:
        yield
    except UserError:
        raise
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{type(err).__name__}: {message}") from err  # Hydra adds how to see the traceback
